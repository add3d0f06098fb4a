"""Are the task teachers worth distilling? Each one against the same student trained on the gold answers.

    python -m uld replicate --grid configs/grids/gold.yaml --out runs/gold        # raw and sft, about 15 min
    python benchmarks/teachers_vs_gold.py --runs runs/gold                        # scores the teachers, 2-3 min

For each task of the gold grid: the teacher (``teacher-<task>``, with its own zero-shot
prompt) on the test questions, scored once into ``<runs>/teacher/<teacher>-test``, against
the grid's ``sft`` runs (the cross-tokenizer student trained on the 1,500 gold answers,
every seed) and ``raw`` run, on the task's metric and on exact match, each difference
paired over questions with a 95% bootstrap interval (`uld.comparison.compare_folders`);
the teacher answers the same questions as the students (the grid's ``eval_limit``).
Prints the table and writes benchmarks/results/teachers_vs_gold.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uld.comparison import compare_folders, question_scores
from uld.distill import finished_metrics
from uld.evaluation import evaluate_model
from uld.replicate import load_grid

RESULTS = Path(__file__).resolve().parent / "results"


def scored_teacher(teacher: str, task: str, runs: Path, limit: int | None) -> Path:
    """The folder of the teacher's answers to the students' test questions, scored once."""
    folder = runs / "teacher" / f"{teacher}-{task}-test"
    if finished_metrics(folder) is None:
        evaluate_model(teacher, task, folder, split="test", limit=limit)
    return folder


def mean_score(folders: list[Path], metric: str) -> float:
    per_run = [list(question_scores(folder, metric).values()) for folder in folders]
    return sum(sum(scores) / len(scores) for scores in per_run) / len(per_run)


def measure(grid_path: Path, runs: Path, teacher_name: str = "teacher-{task}") -> list[dict]:
    grid = load_grid(grid_path)
    cells = grid.expand(runs)
    rows = []
    for task in dict.fromkeys(config.task for _, config in cells):
        folders = {method: [Path(c.out) for _, c in cells if c.task == task and c.method == method
                            and finished_metrics(c.out, echo=lambda line: None) is not None]
                   for method in ("raw", "sft")}
        if not folders["sft"]:
            raise SystemExit(f"no finished sft run for {task} in {runs}: run the gold grid first")
        limit = next(c.eval_limit for _, c in cells if c.task == task)
        teacher = scored_teacher(teacher_name.format(task=task), task, runs, limit)
        metric = finished_metrics(teacher)["metric"]
        for name in dict.fromkeys((metric, "em")):
            found = compare_folders([teacher], folders["sft"], name)
            rows.append({"task": task, "metric": name, "teacher": round(mean_score([teacher], name), 2),
                         "sft": round(mean_score(folders["sft"], name), 2),
                         "raw": round(mean_score(folders["raw"], name), 2) if folders["raw"] else None,
                         "sft_seeds": len(folders["sft"]), "teacher_minus_sft": round(found.difference, 2),
                         "interval": [round(found.low, 2), round(found.high, 2)], "verdict": found.verdict})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("configs/grids/gold.yaml"))
    parser.add_argument("--runs", type=Path, default=Path("runs/gold"))
    parser.add_argument("--teacher", default="teacher-{task}", help="the teacher of each task ({task} is replaced)")
    parser.add_argument("--out", type=Path, default=RESULTS / "teachers_vs_gold.json")
    args = parser.parse_args()
    rows = measure(args.grid, args.runs, args.teacher)
    print("| task | metric | teacher | sft (mean over seeds) | raw | teacher − sft | 95% interval | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        raw = "-" if r["raw"] is None else f"{r['raw']:.2f}"
        print(f"| {r['task']} | {r['metric']} | {r['teacher']:.2f} | {r['sft']:.2f} ({r['sft_seeds']} seeds) | {raw} | "
              f"{r['teacher_minus_sft']:+.2f} | [{r['interval'][0]:+.2f}, {r['interval'][1]:+.2f}] | {r['verdict']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
