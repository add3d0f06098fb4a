"""The notebooks: committed outputs, presets, and the ci preset run end to end by the runner."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from uld.runner import NOTEBOOKS_DIR, PRESETS, discover, kernelspec

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover(NOTEBOOKS_DIR)


def run_cli(*args, timeout=900):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "uld", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_the_sequence_is_there():
    assert [path.stem[:2] for path in NOTEBOOKS] == sorted(path.stem[:2] for path in NOTEBOOKS)
    assert [path.stem[:2] for path in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_carries_cpu_outputs_and_no_errors(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    tags = [cell.metadata.get("tags", []) for cell in code]
    assert sum("parameters" in t for t in tags) == 1, "exactly one parameters cell"
    injected = [cell for cell in code if "injected-parameters" in cell.metadata.get("tags", [])]
    assert len(injected) == 1 and '"cpu" preset' in injected[0].source
    assert not any(line.startswith("output_dir") for line in injected[0].source.splitlines())
    assert all(cell.execution_count is not None for cell in code), "every code cell was executed"
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "a reader sees the plots"
    assert "papermill" not in notebook.metadata and all("papermill" not in c.metadata for c in notebook.cells)


MACHINE_PATH = re.compile(r"(/work/|/home/|/tmp/|/root/|/Users/|[A-Z]:\\\\)")
EMPTY_TABLE = re.compile(r"<tbody>\s*</tbody>")
OBJECT_ADDRESS = re.compile(r" at 0x[0-9a-f]+>")
# Cited by every notebook: the paper, the two distillations it builds on, OT and its solver
COURSE_REFERENCES = ("arXiv:2402.12030", "Hinton", "Kim", "Peyré, Cuturi", "POT: Python Optimal Transport")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_reads_clean(path):
    """What a reader opening it sees: objectives, two to four exercises with folded solutions,
    the course's references; code lines of at most 100 characters; no error, machine path,
    object address or empty table in the outputs; every widget's state saved; the current
    format (cell ids, the kernel's metadata as JupyterLab writes it), valid, and byte for
    byte what Jupyter writes when it saves it: opening it marks nothing modified."""
    text = path.read_text(encoding="utf-8")
    notebook = nbformat.reads(text, as_version=4)
    nbformat.validate(notebook)
    assert nbformat.writes(notebook) + "\n" == text  # the bytes Jupyter writes on saving it: nothing to rewrite
    assert notebook.nbformat == 4 and notebook.nbformat_minor >= 5 and all("id" in cell for cell in notebook.cells)
    assert notebook.metadata.kernelspec == kernelspec() and "version" in notebook.metadata.language_info
    prose = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "**You will learn**" in notebook.cells[0].source
    references = prose[re.search(r"^## References$", prose, re.M).end():]
    assert all(source in references for source in COURSE_REFERENCES), references
    exercises = next(cell.source for cell in notebook.cells if cell.source.startswith("## Exercises"))
    questions = exercises.split("<details><summary>Solutions")[0]  # solutions folded under them
    assert "<details><summary>Solutions" in exercises
    assert 2 <= len(re.findall(r"^\d\. ", questions, re.M)) <= 4
    saved_widgets = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    for cell in (cell for cell in notebook.cells if cell.cell_type == "code"):
        assert not [line for line in cell.source.splitlines() if len(line) > 100], cell.source[:200]
        for output in cell.outputs:
            assert output.output_type != "error"
            view = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            assert view is None or view["model_id"] in saved_widgets.get("state", {})  # shown without a kernel
            text = output.get("text", "") + "".join(v for v in output.get("data", {}).values() if isinstance(v, str))
            assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text).group(0)
            assert not EMPTY_TABLE.search(text) and not OBJECT_ADDRESS.search(text)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_only_set_parameters_that_notebooks_declare(preset):
    table = yaml.safe_load((NOTEBOOKS_DIR / "params" / f"{preset}.yaml").read_text()) or {}
    by_key = {path.stem[:2]: path for path in NOTEBOOKS} | {path.stem: path for path in NOTEBOOKS}
    for key, values in table.items():
        targets = NOTEBOOKS if key == "all" else [by_key.get(str(key))]
        assert targets[0] is not None, f"{preset}.yaml names no notebook: {key!r}"
        for path in targets:
            declared = papermill.inspect_notebook(str(path))
            assert set(values or {}) <= set(declared), f"{path.stem} does not declare {set(values) - set(declared)}"


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ci-notebooks")
    done = run_cli("notebooks", "--preset", "ci", "--out", str(out))
    return out, done


def test_ci_preset_runs_every_notebook(ci_run):
    out, done = ci_run
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "ci"
    assert set(summary["notebooks"]) == {path.stem for path in NOTEBOOKS}
    for stem, result in summary["notebooks"].items():
        assert result["status"] == "ok", (stem, result["error"])
        assert (out / stem / "executed.ipynb").exists() and (out / stem / "metrics.json").exists()


def metrics_of(ci_run, prefix):
    out, _ = ci_run
    stem = next(path.stem for path in NOTEBOOKS if path.stem.startswith(prefix))
    return json.loads((out / stem / "metrics.json").read_text())


def test_01_vocabularies_really_differ(ci_run):
    metrics = metrics_of(ci_run, "01")
    assert metrics["tokenizers"] == {"gpt2": 50257, "llama": 32000, "qwen2": 151646}  # the real ones, offline
    assert metrics["max_vocabulary_jaccard"] < 0.5 and 0 < metrics["mapped_share"] < 1
    assert metrics["sentences_with_different_token_counts"] >= 1


def test_02_line_identities_hold(ci_run):
    metrics = metrics_of(ci_run, "02")
    assert metrics["line_identity_max_abs_error"] < 1e-12 and metrics["tv_identity_max_abs_error"] < 1e-12
    assert metrics["zero_one_cost"] == pytest.approx(1.0, abs=1e-12)


def test_03_closed_form_matches_pot(ci_run):
    metrics = metrics_of(ci_run, "03")
    assert metrics["n_pairs"] >= 1000 and metrics["n_unequal_size_pairs"] > 900
    assert metrics["pot_max_abs_error"] < 1e-12
    assert metrics["brute_force_max_abs_error"] < 1e-12 and metrics["by_hand_max_abs_error"] < 1e-12
    assert metrics["bijection_lp_max_abs_error"] < 1e-12 and metrics["bijection_lp_max_size"] >= 500
    assert metrics["closed_form_slope"] < 1.5 < metrics["emd_slope"]
    assert metrics["wasserstein_1d_slope"] < 1.5 and metrics["wasserstein_1d_max_abs_error"] < 1e-9


def test_04_sequence_facts_hold(ci_run):
    metrics = metrics_of(ci_run, "04")
    assert metrics["aligned_pairs_in_example"] == 3 and metrics["gradient_sum"] < 1e-12
    assert metrics["uld_at_low_temperature"] < 1e-6 and metrics["uld_high_temperature_gap"] < 1e-3
    assert metrics["kl_fit_tv"] < 0.05 and metrics["uld_fit_uld"] < 0.02 < 0.5 < metrics["uld_fit_tv"]
    assert metrics["top_k_relative_error_at_256"] < 0.01


def rerun_grid(ci_run, stem, grid, finished):
    """The CLI on the grid notebook ``stem`` ran at its ci preset: every one of its ``finished``
    cells is found finished, none runs again. Returns the CLI's result and the runs folder."""
    out, _ = ci_run
    runs = out / stem / "runs"
    done = run_cli("replicate", "--grid", f"configs/grids/{grid}", "--preset", "ci", "--out", str(runs))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"0 run, {finished} already finished, 0 failed" in done.stdout
    return done, runs


def test_05_reads_two_real_models_and_distils_between_them(ci_run):
    metrics = metrics_of(ci_run, "05")
    assert metrics["vocabularies"] == {"gemma-3-270m": 262_144, "smollm2-135m-instruct": 49_152}
    assert metrics["compared_positions"] >= 4 and 0 < metrics["share_same_text"] < 1
    assert metrics["identity_blind"]["uld_unchanged"]
    for row in metrics["top_k_cache"].values():
        assert 0 <= row["max error"] <= row["max bound"] <= 2
    assert set(metrics["scores"]) == {"raw", "sft", "seqkd", "uld"} and metrics["teacher_score"] is not None
    assert {v["verdict"] for v in metrics["verdicts"].values()} <= {"above", "below", "inconclusive"}


def test_the_real_grid_runs_through_the_cli_with_its_ci_preset(ci_run):
    """The CLI on the grid the notebook ran with the same preset: every cell is found finished."""
    done, runs = rerun_grid(ci_run, "05_real_language_models", "real.yaml", finished=4)
    assert "| smollm2-135m-instruct | uld |" in done.stdout.replace("gemma-3-270m | ", "")
    assert "The teacher gemma-3-270m on the same " in done.stdout
    missing = run_cli("replicate", "--grid", "configs/grids/real.yaml", "--out", str(runs))
    assert missing.returncode == 2 and "needs --preset; choose from ci, cpu, gpu" in missing.stderr


def test_06_distils_across_tokenizers(ci_run):
    metrics = metrics_of(ci_run, "06")
    assert metrics["answers_split_alike"] < 0.5 and 0 < metrics["positions_alike"] < 0.5
    assert {key.split()[1] for key in metrics["scores"]} == {"raw", "sft", "seqkd", "uld", "kl"}
    assert metrics["scores"]["default-student raw -"] <= 5 and metrics["teacher_questions"] == 8
    assert set(metrics["verdicts"]) == {"default-student-shared kl-seqkd 32", "default-student uld-seqkd 32",
                                        "default-student seqkd-sft 32"}
    # the random ci teacher teaches nothing: every seed answers alike, so nothing can be called
    assert metrics["uld_vs_seqkd_verdict"] == ["inconclusive"] and metrics["control_shows_distillation"] is False


def test_07_encoder_decoder_students(ci_run):
    metrics = metrics_of(ci_run, "07")
    assert set(metrics["cross_tokenizer"]) == {"raw", "sft", "seqkd", "uld"}
    assert set(metrics["shared_vocabulary"]) == {"seqkd", "uld", "kl"}
    assert set(metrics["cross_verdicts"]) == {"uld-seqkd", "seqkd-sft", "sft-raw"}
    assert set(metrics["shared_verdicts"].values()) == {"inconclusive"}  # one seed in ci: no noise measured


def test_08_ablations(ci_run):
    metrics = metrics_of(ci_run, "08")
    assert set(metrics["lambda"]) == {"0.0", "1.5"} and set(metrics["top_k"]) == {"4", "32"}
    assert metrics["panels"] == ["data fraction", "lambda", "student", "temperature", "top-k"]
    settings = [(row["panel"], row["setting"]) for row in metrics["verdicts"]]
    assert settings == [("lambda", "1.5"), ("data fraction", "0.5"), ("data fraction", "1"),
                        ("student", "default-student-small"), ("student", "default-student"),
                        ("temperature", "2"), ("top-k", "4")]
    assert metrics["paper_dataset"] == "squad" and metrics["paper_rows"] == 22  # the paper's rows beside ours
    assert metrics["paper_uld_above_seqkd"] == "11/11" and sum(metrics["our_student_and_data_verdicts"].values()) == 4


def test_09_has_no_paper_number_for_the_embedded_pair(ci_run):
    out, _ = ci_run
    metrics = metrics_of(ci_run, "09")
    assert metrics["paper"] is None and metrics["method"] == "uld" and 0 <= metrics["scores"]["f1"] <= 100
    assert metrics["paper_dataset"] == "squad" and metrics["paper_rows"] > 0  # the stand-in's rows shown


def test_09_cpu_preset_is_the_main_jobs_uld_cell():
    """The cpu preset of notebook 09 says it runs the main job's ULD cell, seed 0: the same
    settings, field by field, as that cell of configs/grids/cpu.yaml."""
    from dataclasses import asdict

    from uld.distill import DistillConfig
    from uld.experiments import load_recipe
    from uld.replicate import load_grid

    preset = yaml.safe_load((NOTEBOOKS_DIR / "params" / "cpu.yaml").read_text())["09"]
    notebook = DistillConfig(**{**load_recipe(preset["recipe"]), **preset["config"], "out": "."})
    cells = load_grid("configs/grids/cpu.yaml").expand(Path("."))
    cell = next(config for _, config in cells if (config.student, config.method, config.seed)
                == ("pretrained-student-large", "uld", 0))
    differ = {k: v for k, v in asdict(notebook).items() if v != getattr(cell, k) and k not in ("out", "teacher_outputs")}
    assert not differ, differ


def test_10_measures_what_uld_teaches_and_the_fixes(ci_run):
    metrics = metrics_of(ci_run, "10")
    language = metrics["language"]
    assert set(language) == {"seqkd", "uld", "uld_alone", "hybrid", "kl"}
    assert min(language, key=lambda m: language[m]["sorted_l1"]) == "uld_alone"  # the profile...
    assert max(language, key=lambda m: language[m]["kl"]) == "uld_alone"  # ...and not the tokens
    assert metrics["language_verdicts"]["hybrid-uld"]["verdict"] == "below"
    example = metrics["number_example"]
    assert example["positional_alike"] < example["offsets_alike"] <= example["offsets"]
    for row in metrics["numbers"].values():
        assert 0 <= row["positional pairs alike"] <= 1 and 0 <= row["offsets pairs alike"] <= 1
    assert metrics["fix_diagnostics"]["shared tokens"] > 0
    assert set(metrics["fix_scores"]) == {"seqkd", "uld", "uld + offsets", "uld + hybrid", "uld + offsets + hybrid"}
    assert {v["verdict"] for v in metrics["fix_verdicts"].values()} <= {"above", "below", "inconclusive"}


def test_the_fixes_grid_runs_through_the_cli_with_its_ci_preset(ci_run):
    rerun_grid(ci_run, "10_where_uld_fails", "fixes.yaml", finished=5)


def test_unknown_preset_and_empty_selection_exit_2_with_one_line(tmp_path):
    for args, message in ((["--preset", "tpu"], "unknown preset 'tpu'"), (["--preset", "ci", "--only", "zz"], "matches 'zz'")):
        done = run_cli("notebooks", *args, "--out", str(tmp_path), timeout=120)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def write_notebook(path, *sources):
    cells = [nbformat.v4.new_code_cell("output_dir = 'x'")]
    cells[0].metadata["tags"] = ["parameters"]
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def test_a_failing_notebook_is_reported_and_the_run_goes_on(tmp_path):
    folder = tmp_path / "notebooks"
    (folder / "params").mkdir(parents=True)
    (folder / "params" / "ci.yaml").write_text("all: {}\n")
    write_notebook(folder / "01_fails.ipynb", "x = 1", "raise RuntimeError('boom')")
    metrics = "import json, pathlib; pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True); " \
              "pathlib.Path(output_dir, 'metrics.json').write_text(json.dumps({'answer': 42}))"
    write_notebook(folder / "02_works.ipynb", metrics)
    write_notebook(folder / "03_no_metrics.ipynb", "y = 2")
    out = tmp_path / "out"
    (out / "03_no_metrics").mkdir(parents=True)
    (out / "03_no_metrics" / "metrics.json").write_text('{"from": "an earlier run"}')  # not this run's
    done = run_cli("notebooks", "--preset", "ci", "--out", str(out), "--notebooks-dir", str(folder), timeout=300)
    assert done.returncode == 1
    assert "01_fails: failed" in done.stdout and "cell 2 (raise RuntimeError('boom')): RuntimeError: boom" in done.stdout
    summary = json.loads((out / "summary.json").read_text())["notebooks"]
    assert summary["01_fails"]["status"] == "failed" and summary["01_fails"]["error"]["cell"].startswith("2 (")
    assert summary["02_works"] == {**summary["02_works"], "status": "ok", "metrics": {"answer": 42}, "error": None}
    assert summary["03_no_metrics"]["error"]["ename"] == "MissingMetrics"


def test_in_place_refresh_writes_normalised_notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    (folder / "params").mkdir(parents=True)
    (folder / "params" / "cpu.yaml").write_text("all: {}\n")
    metrics = "import json, pathlib; pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True); " \
              "pathlib.Path(output_dir, 'metrics.json').write_text('{}'); print('hello')"
    sliders = "import ipywidgets as w; w.interact(lambda n: print(n * 'x'), n=w.IntSlider(3, description='n'))"
    noise = "from tqdm.auto import tqdm; import pandas as pd; list(tqdm(range(3))); pd.DataFrame({'a': [1]}).style"
    write_notebook(folder / "01_one.ipynb", metrics, noise, sliders)

    def refresh():
        done = run_cli("notebooks", "--preset", "cpu", "--out", str(tmp_path / "out"), "--in-place",
                       "--notebooks-dir", str(folder), timeout=300)
        assert done.returncode == 0, done.stderr
        return (folder / "01_one.ipynb").read_text()

    first = refresh()
    assert refresh() == first, "re-running without changes gives no diff"
    notebook = nbformat.read(folder / "01_one.ipynb", as_version=4)
    assert notebook.cells[-3].outputs[0]["text"] == "hello\n"
    # no progress bar, no object address: "<pandas.io.formats.style.Styler>" with its HTML
    assert [output["data"]["text/plain"] for output in notebook.cells[-2].outputs
            if "text/plain" in output.get("data", {})] == ["<pandas.io.formats.style.Styler>"]
    assert "papermill" not in notebook.metadata and str(tmp_path) not in first
    # the sliders and their output are saved, under ids that do not change from run to run
    view = notebook.cells[-1].outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert view["model_id"] == "0" * 32 and view["model_id"] in state
    # where they cannot show, a line naming the slider instead of the widget's repr
    assert notebook.cells[-1].outputs[0]["data"]["text/plain"].startswith("Controls: n. Run this cell")
    # the kernel's metadata as JupyterLab writes it on opening: nothing to mark modified
    assert notebook.metadata.kernelspec.display_name == "Python 3 (ipykernel)"
    assert notebook.metadata.language_info.version == platform.python_version()
    assert {model["model_name"] for model in state.values()} >= {"VBoxModel", "IntSliderModel", "OutputModel"}
    assert not any(model["model_name"].endswith("ProgressModel") for model in state.values())
    output = next(model for model in state.values() if model["model_name"] == "OutputModel")
    assert output["state"]["outputs"][0]["text"] == "xxx\n"
