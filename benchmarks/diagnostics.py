"""The diagnostics behind the main job's verdicts (`uld.diagnostics`), measured.

    python benchmarks/diagnostics.py --runs runs/cpu      # after the main job; about a minute

1. How sure the extractive teacher is of its own answers: the top-1 probability and the
   entropy (nats) of its next-token distribution at every token of the answers it gives
   to test questions (its greedy answers, read back after its prompt).
2. How often the two answers ULD aligns stand for the same text at a position: the share
   of compared positions whose teacher and student tokens cover the same characters, on
   the teacher's answers.
3. Whether the students follow the teacher's uncertainty: each run's answer entropy as its
   Trainer logged it (`entropy`, mean over the last logged steps), by student, method and
   training size, over seeds.

Prints the tables and writes benchmarks/results/diagnostics.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from uld.data import load_task
from uld.diagnostics import final_entropy, own_answer_confidence, positions_alike
from uld.models import load_model, load_tokenizer

TEACHER, TASK = "teacher-extractive_qa", "extractive_qa"


def student_entropies(runs: Path) -> list[dict]:
    groups: dict = {}
    for metrics_path in sorted(runs.glob("cells/*/metrics.json")):
        metrics = json.loads(metrics_path.read_text())
        ending = final_entropy(metrics.get("log_history", []))
        if ending is not None:
            groups.setdefault((metrics["student"], metrics["method"], metrics["n_train"]), []).append(ending)
    return [{"student": s, "method": m, "examples": n, "entropy": round(statistics.mean(v), 4), "seeds": len(v)}
            for (s, m, n), v in sorted(groups.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/cpu"), help="a finished main job's folder")
    parser.add_argument("--limit", type=int, default=200, help="test questions the teacher answers")
    args = parser.parse_args()
    confidence, answers = own_answer_confidence(load_model(TEACHER), load_tokenizer(TEACHER),
                                                load_task(TASK, "test", limit=args.limit), TASK)
    alike = positions_alike(load_tokenizer("default-teacher"), load_tokenizer("default-student"),
                            [answer for answer in answers if answer])
    entropies = student_entropies(args.runs)
    print(f"teacher-extractive_qa on its own answers to {args.limit} test questions (per answer token):")
    print("| measure | mean | q25 | median | q75 |\n|---|---|---|---|---|")
    for name in ("top1", "entropy"):
        row = confidence[name]
        print(f"| {name} | {row['mean']:.3f} | {row['q25']:.3f} | {row['median']:.3f} | {row['q75']:.3f} |")
    print(f"tokens with top-1 above 0.9: {confidence['tokens_above_0.9']:.1%}; "
          f"compared positions alike (teacher vs default-student): {alike:.1%}")
    if entropies:
        print("\nstudents' answer entropy at the end of training (nats, mean over seeds):")
        print("| student | method | examples | entropy | seeds |\n|---|---|---|---|---|")
        for row in entropies:
            print(f"| {row['student']} | {row['method']} | {row['examples']} | {row['entropy']:.3f} | {row['seeds']} |")
    out = Path(__file__).resolve().parent / "results" / "diagnostics.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"teacher": confidence, "positions_alike": round(alike, 4), "students": entropies},
                              indent=1))


if __name__ == "__main__":
    main()
