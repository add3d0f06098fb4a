"""The notebooks' helpers: selecting runs by their settings and comparing two groups of runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from uld.experiments import PROJECT, Run, compare, find_grid, load_recipe, scores_table, select


def finished_run(folder, method: str, train_limit: int, seed: int, right: int, questions: int = 60) -> Run:
    """A run whose first ``right`` answers are right (exact match), the rest wrong."""
    folder.mkdir(parents=True)
    lines = [{"id": q, "prediction": "yes" if q < right else "no", "references": ["yes"]} for q in range(questions)]
    (folder / "predictions.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    config = SimpleNamespace(method=method, train_limit=train_limit, seed=seed)
    metrics = {"metric": "em", "scores": {"em": 100 * right / questions}, "n_train": train_limit}
    return Run(f"{method}-train_limit{train_limit}-seed{seed}", config, metrics, folder)


@pytest.fixture
def runs(tmp_path):
    made = []
    for seed in range(3):
        made.append(finished_run(tmp_path / f"a{seed}", "kl", 100, seed, right=40 + seed))
        made.append(finished_run(tmp_path / f"b{seed}", "seqkd", 100, seed, right=20 + seed))
        made.append(finished_run(tmp_path / f"c{seed}", "seqkd", 1500, seed, right=20 + seed))
    return made


def test_select_by_label_by_settings_and_by_a_recorded_metric(runs):
    assert len(select(runs, "kl-train_limit100")) == 3
    assert {r.config.seed for r in select(runs, {"method": "seqkd", "train_limit": 1500})} == {0, 1, 2}
    assert len(select(runs, {"n_train": 100})) == 6 and select(runs, {"method": "uld"}) == []


def test_a_setting_the_method_never_reads_matches_any_value(runs):
    """seqkd reads no lambda: asking for seqkd at lambda 0.5 finds the seqkd runs; kl reads it."""
    assert len(select(runs, {"method": "seqkd", "train_limit": 100, "distillation_weight": 0.5})) == 3
    assert select(runs, {"method": "kl", "distillation_weight": 0.5}) == []  # kl reads it; these runs lack it


def test_compare_by_settings_finds_a_known_shift_and_names_a_missing_side(runs):
    found = compare(runs, {"method": "kl", "train_limit": 100}, {"method": "seqkd", "train_limit": 100})
    assert found.verdict == "above" and found.difference == pytest.approx(100 * 20 / 60)
    with pytest.raises(ValueError, match="no runs match"):
        compare(runs, {"method": "uld"}, "seqkd-train_limit100")


def test_grid_files_are_found_from_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_grid("configs/grids/cpu.yaml") == PROJECT / "configs" / "grids" / "cpu.yaml"
    (tmp_path / "mine.yaml").write_text("grid: {}")
    assert find_grid("mine.yaml") == Path("mine.yaml")  # read from the working folder


def test_a_notebook_starts_from_the_cpu_recipe_wherever_it_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("configs/recipes/cpu.yaml")
    assert recipe["teacher"] == "teacher-extractive_qa" and recipe["learning_rate"] == 0.002
    (tmp_path / "mine.yaml").write_text("epochs: 2\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="mine.yaml: unknown config keys: learning_rat"):
        load_recipe("mine.yaml")


def test_a_run_reads_back_its_predictions(runs):
    assert runs[0].predictions[:41] == ["yes"] * 40 + ["no"]


def test_the_scores_table_groups_by_any_key_and_counts_the_top_answer(runs):
    table = scores_table(runs, by=lambda run: (run.config.method, run.config.train_limit), names=("method", "size"))
    assert list(table.index) == [("kl", 100), ("seqkd", 100), ("seqkd", 1500)]
    assert table.loc[("kl", 100), "mean"] == pytest.approx(100 * 41 / 60) and table.loc[("kl", 100), "seeds"] == 3
    assert table.loc[("seqkd", 100), "top answer"] == pytest.approx(40 / 60)  # "no" for questions 20-59 of seed 0
    assert list(scores_table(runs).index) == ["kl-train_limit100", "seqkd-train_limit100", "seqkd-train_limit1500"]
