"""Execute the notebook sequence with papermill, one preset at a time.

    python -m uld notebooks --preset ci --out runs/ci            # every notebook
    python -m uld notebooks --preset cpu --out runs/cpu --only 03
    python -m uld notebooks --preset cpu --out runs/cpu --in-place   # refresh committed outputs

Each notebook runs with its ``parameters`` cell overridden by
``notebooks/params/<preset>.yaml`` (keys are notebook stems or their number, e.g. ``"03"``)
and ``output_dir = OUT/<stem>``; it writes ``OUT/<stem>/executed.ipynb`` and
``OUT/<stem>/metrics.json``. ``OUT/summary.json`` records, per notebook, the status, the
seconds and the metrics; it is rewritten atomically after each notebook, so an
interrupted run keeps what finished. A failing notebook is reported with its failing cell
and the run goes on.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from uld.storage import write_atomically
from uld.locks import one_writer

PRESETS = ("ci", "cpu", "gpu")
NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
# Per-cell and per-notebook metadata that changes on every run; dropped from committed notebooks.
_VOLATILE_CELL_METADATA = ("papermill", "execution", "ExecuteTime")
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# How a saved widget's text fallback ends (an untrusted notebook shows it in place of the widget)
WIDGET_FALLBACK_HINT = "Run this cell, or trust the notebook, to show"


class UsageError(ValueError):
    """A request the runner cannot act on (the command line exits 2 with its message)."""


@dataclass
class NotebookResult:
    stem: str
    status: str  # "ok" or "failed"
    seconds: float
    metrics: dict = field(default_factory=dict)
    error: dict | None = None  # {"cell": "index (first line)", "ename": ..., "evalue": ...} when failed


def discover(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The sequence: ``NN_*.ipynb`` files in order."""
    return sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))


def select(paths: list[Path], only: str | None) -> list[Path]:
    """Notebooks whose stem matches ``only``: a glob of the whole stem or of its start
    (``0[1-4]`` selects 01 to 04), or a substring such as ``03``.

    >>> [p.stem for p in select([Path("01_a"), Path("04_b"), Path("05_c")], "0[1-4]")]
    ['01_a', '04_b']
    """
    if not only:
        return list(paths)
    return [p for p in paths if fnmatch.fnmatch(p.stem, only) or fnmatch.fnmatch(p.stem, only + "*") or only in p.stem]


def preset_parameters(preset: str, stem: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict:
    """Parameters that ``preset`` sets for notebook ``stem`` (by full stem or its number)."""
    import yaml

    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    path = Path(notebooks_dir) / "params" / f"{preset}.yaml"
    if not path.exists():
        raise UsageError(f"preset file {path} is missing")
    table = yaml.safe_load(path.read_text()) or {}
    parameters = dict(table.get("all", {}) or {})
    parameters.update(table.get(stem.split("_")[0], {}) or {})
    parameters.update(table.get(stem, {}) or {})
    return parameters


def run_notebooks(
    preset: str,
    out: Path,
    only: str | None = None,
    in_place: bool = False,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    echo=print,
) -> list[NotebookResult]:
    """Execute the selected notebooks; returns one result per notebook, in order."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    chosen = select(discover(notebooks_dir), only)
    if not chosen:
        raise UsageError(f"no notebook in {notebooks_dir} matches {only!r}" if only else f"no notebooks in {notebooks_dir}")
    out = Path(out).resolve()
    with one_writer(out):
        return _run_chosen(chosen, preset, out, in_place, notebooks_dir, echo)


def _run_chosen(chosen: list[Path], preset: str, out: Path, in_place: bool, notebooks_dir: Path,
                echo) -> list[NotebookResult]:
    results: list[NotebookResult] = []
    for path in chosen:
        result = run_one(path, preset, out / path.stem, notebooks_dir)
        results.append(result)
        _write_summary(out / "summary.json", preset, results)
        where = "" if result.error is None else f" at cell {result.error['cell']}: {result.error['ename']}: {result.error['evalue']}"
        echo(f"{path.stem}: {result.status} in {result.seconds:.1f} s{where}")
        if in_place and result.status == "ok":
            refresh_committed(out / path.stem / "executed.ipynb", path, preset)
    return results


def run_one(path: Path, preset: str, out: Path, notebooks_dir: Path = NOTEBOOKS_DIR) -> NotebookResult:
    """Execute one notebook into ``out`` and collect its metrics."""
    import papermill

    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    # Left in place (09 reads its finished run from it), but only a file written by this
    # execution counts as its metrics.
    before = metrics_path.stat().st_mtime_ns if metrics_path.exists() else None
    parameters = {**preset_parameters(preset, path.stem, notebooks_dir), "output_dir": str(out)}
    start = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(
            str(path), str(out / "executed.ipynb"), parameters=parameters, cwd=str(path.parent),
            kernel_name="python3", progress_bar=False, log_output=False,
        )
    except papermill.PapermillExecutionError as failure:
        error = {"cell": _error_cell(out / "executed.ipynb"), "ename": failure.ename,
                 "evalue": _first_line(failure.evalue)}
    except Exception as failure:  # the kernel died, the notebook is unreadable, ...
        error = {"cell": None, "ename": type(failure).__name__, "evalue": _first_line(str(failure))}
    seconds = time.perf_counter() - start
    written = metrics_path.exists() and metrics_path.stat().st_mtime_ns != before
    metrics = json.loads(metrics_path.read_text()) if written else {}
    if error is None and not written:
        error = {"cell": None, "ename": "MissingMetrics", "evalue": f"{path.stem} wrote no metrics.json"}
    return NotebookResult(path.stem, "ok" if error is None else "failed", round(seconds, 2), metrics, error)


def refresh_committed(executed: Path, committed: Path, preset: str) -> None:
    """Copy an executed notebook over the committed one, without run-specific metadata."""
    import nbformat

    notebook = normalise(nbformat.read(executed, as_version=4), preset)
    nbformat.write(notebook, committed)


def normalise(notebook, preset: str):
    """Drop what changes from run to run from a notebook: timings, dates, paths, object
    addresses in text outputs, progress bars; widget ids are made stable. The kernel's
    metadata is left as JupyterLab writes it on opening (the kernelspec's display name,
    the language's version), so that opening the notebook does not mark it modified."""
    notebook = copy.deepcopy(notebook)
    notebook.metadata.pop("papermill", None)
    _saved_widgets(notebook)
    notebook.metadata["kernelspec"] = kernelspec(notebook.metadata.get("kernelspec", {}).get("name", "python3"))
    for cell in notebook.cells:
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        for number, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {})
            if isinstance(data.get("text/plain"), str):  # "<pandas...Styler at 0x7f...>": new every run
                data["text/plain"] = re.sub(r" at 0x[0-9a-f]+>", ">", data["text/plain"])
            if isinstance(data.get("text/html"), str):  # a Styler's random table id: T_6a8f1
                for index, table in enumerate(dict.fromkeys(re.findall(r'id="T_([0-9a-f]+)"', data["text/html"]))):
                    data["text/html"] = data["text/html"].replace(f"T_{table}", f"T_output{number}_{index}")
        if "injected-parameters" in cell.metadata.get("tags", []):
            lines = [_wrapped(line) for line in cell.source.splitlines()[1:] if not line.startswith("output_dir")]
            cell.source = "\n".join([f'# Parameters of the "{preset}" preset (the output folder left out)'] + lines)
            cell.id = "injected-parameters"  # papermill draws a new random id on every run
    return notebook


def kernelspec(name: str = "python3") -> dict:
    """A notebook's ``kernelspec`` metadata as Jupyter writes it for the installed kernel
    ``name``: ``{"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}``
    with ipykernel (papermill copies the notebook's own, whatever it says)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(name)
    return {"display_name": spec.display_name, "language": spec.language, "name": name}


def _wrapped(line: str, width: int = 100) -> str:
    """A parameter line as papermill wrote it, a dict or list longer than ``width`` spread
    one item a line (the committed notebooks keep code lines within 100 characters).

    >>> print(_wrapped('config = {"method": "uld", "epochs": 4}', width=20))
    config = {
        "method": "uld",
        "epochs": 4,
    }
    """
    import ast

    from papermill.translators import PythonTranslator

    name, _, text = line.partition(" = ")
    if len(line) <= width or not text.startswith(("{", "[")):
        return line
    value = ast.literal_eval(text)
    if isinstance(value, dict):
        items = [f"{PythonTranslator.translate(k)}: {PythonTranslator.translate(v)}" for k, v in value.items()]
    else:
        items = [PythonTranslator.translate(item) for item in value]
    return "\n".join([f"{name} = {text[0]}", *(f"    {item}," for item in items), "}" if text[0] == "{" else "]"])


def _saved_widgets(notebook) -> None:
    """Keep the saved widgets (sliders and their output show without a kernel), renamed,
    with a readable text fallback.

    nbclient saves each widget model under a random id; renaming them ``0...0``, ``0...1``
    in the order they are reached from the cells' widget views makes two runs of the same
    notebook write the same file. Models no view reaches are dropped. Where widgets cannot
    show (an untrusted notebook in JupyterLab, a plain-text viewer) the output's text is
    shown instead; the widget's repr there becomes a line naming its controls.
    """
    state = notebook.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})

    def reached(model: str) -> list[str]:
        order, queue = [], [model]
        while queue:
            model = queue.pop(0)
            if model in state and model not in order:
                order.append(model)
                queue += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[model], sort_keys=True))
        return order

    def kept(output) -> bool:  # progress bars (tqdm's) are the run's noise, not the notebook's content
        view = output.get("data", {}).get(_WIDGET_VIEW)
        models = reached(view["model_id"]) if view else []
        return not view or bool(models) and not any(state[m]["model_name"].endswith("ProgressModel") for m in models)

    for cell in notebook.cells:
        if "outputs" in cell:
            cell.outputs = [output for output in cell.outputs if kept(output)]
    widget_outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])
                      if _WIDGET_VIEW in output.get("data", {})]
    views = [output["data"][_WIDGET_VIEW] for output in widget_outputs]
    for output, view in zip(widget_outputs, views):
        output["data"]["text/plain"] = _widget_fallback([state[m]["state"].get("description", "")
                                                         for m in reached(view["model_id"])])
    order = list(dict.fromkeys(model for view in views for model in reached(view["model_id"])))
    renamed = {model: f"{index:032x}" for index, model in enumerate(order)}
    if not renamed:
        notebook.metadata.pop("widgets", None)
        return
    text = json.dumps({model: state[model] for model in order})
    text = re.sub(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", lambda match: renamed.get(match.group(0), match.group(0)), text)
    notebook.metadata["widgets"][_WIDGET_STATE]["state"] = json.loads(text)
    for view in views:
        view["model_id"] = renamed.get(view["model_id"], view["model_id"])


def _widget_fallback(descriptions: list[str]) -> str:
    """What a saved widget output reads where the widget cannot show; it ends with
    `WIDGET_FALLBACK_HINT`.

    >>> _widget_fallback(["lambda", "", "top-k"])
    'Controls: lambda; top-k. Run this cell, or trust the notebook, to show them.'
    """
    named = [description for description in descriptions if description]
    if not named:
        return f"An interactive widget. {WIDGET_FALLBACK_HINT} it."
    return f"Controls: {'; '.join(named)}. {WIDGET_FALLBACK_HINT} them."


def _write_summary(path: Path, preset: str, results: list[NotebookResult]) -> None:
    summary = {"preset": preset, "notebooks": {r.stem: {k: v for k, v in asdict(r).items() if k != "stem"} for r in results}}
    write_atomically(path, json.dumps(summary, indent=2) + "\n")


def _error_cell(executed: Path) -> str | None:
    """``"N (first line)"`` for the failing cell: its index in the source notebook."""
    import nbformat

    try:
        notebook = nbformat.read(executed, as_version=4)
    except Exception:
        return None
    added_by_papermill = {"injected-parameters", "papermill-error-cell-tag"}
    source_cells = [c for c in notebook.cells if not added_by_papermill & set(c.metadata.get("tags", []))]
    for index, cell in enumerate(source_cells):
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            return f"{index} ({_first_line(cell.source)[:60]})"
    return None


def _first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0]
