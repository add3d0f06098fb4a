"""How the default pair's two tokenizers split the embedded tasks' test splits.

    python benchmarks/tokenizer_pair.py            # about 20 s on 2 cores

For each task: teacher tokens per student token on the contexts and on the answers (the
positional alignment pairs pieces of similar length when this is near 1), the share of
answers both tokenizers split into the same pieces, the share of the answer positions ULD
compares whose two tokens cover the same characters (`uld.diagnostics.positions_alike`),
and the common words (5 times or
more, 3 letters or more) either one writes in single characters. Prints a table and
writes benchmarks/results/tokenizer_pair.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from uld.data import load_task
from uld.diagnostics import positions_alike
from uld.models import load_tokenizer
from uld.tokenizers import share_split_alike, tokens_per_token, words_in_characters

TASKS = ("extractive_qa", "generative_qa", "dialogue_summary")


def measure(teacher_name: str = "default-teacher", student_name: str = "default-student") -> list[dict]:
    teacher, student = load_tokenizer(teacher_name), load_tokenizer(student_name)
    rows = []
    for task in TASKS:
        split = load_task(task, "test")
        contexts, answers = list(split["context"]), [f" {refs[0]}" for refs in split["answers"]]
        rows.append({
            "task": task, "vocabulary": [len(teacher), len(student)],
            "contexts": tokens_per_token(teacher, student, contexts),
            "answers": tokens_per_token(teacher, student, answers),
            "answers_split_alike": share_split_alike(teacher, student, answers),
            "positions_alike": positions_alike(teacher, student, [refs[0] for refs in split["answers"]]),
            "teacher_words_in_characters": words_in_characters(teacher, contexts + answers, min_count=5),
            "student_words_in_characters": words_in_characters(student, contexts + answers, min_count=5),
        })
    return rows


def main() -> None:
    rows = measure()
    print(f"default-teacher {rows[0]['vocabulary'][0]} tokens, default-student {rows[0]['vocabulary'][1]} tokens")
    print("| task | teacher/student tokens, contexts | answers | answers split alike | compared positions alike "
          "| words in characters |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        words = row["teacher_words_in_characters"] + row["student_words_in_characters"]
        print(f"| {row['task']} | {row['contexts']:.2f} | {row['answers']:.2f} | {row['answers_split_alike']:.1%} | "
              f"{row['positions_alike']:.1%} | {', '.join(words) or 'none'} |")
    out = Path(__file__).resolve().parent / "results" / "tokenizer_pair.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
