"""The embedded offline tasks: deterministic, committed, disjoint, varied, of the right kinds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from collections import Counter

from uld.data import DATA_DIR
from uld.embedded import EMBEDDED_TASKS, SPLIT_SIZES, generate

ROOT = Path(__file__).resolve().parents[1]


def test_committed_files_are_exactly_what_the_generator_writes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "uld", "data", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for task in EMBEDDED_TASKS:
        for split in SPLIT_SIZES:
            fresh, committed = tmp_path / task / f"{split}.jsonl", DATA_DIR / task / f"{split}.jsonl"
            assert fresh.read_bytes() == committed.read_bytes(), f"{committed} is stale: run python -m uld data"


def test_another_seed_gives_other_tasks():
    assert generate("extractive_qa", seed=1, sizes={"train": 5}) != generate("extractive_qa", sizes={"train": 5})
    assert generate("extractive_qa", seed=1, sizes={"train": 5}) == generate("extractive_qa", seed=1, sizes={"train": 5})


@pytest.mark.parametrize("task", EMBEDDED_TASKS)
def test_splits_have_their_sizes_and_never_overlap(task):
    splits = generate(task)
    assert {split: len(rows) for split, rows in splits.items()} == SPLIT_SIZES
    ids = [{r["id"] for r in rows} for rows in splits.values()]
    texts = [{(r["context"], r["question"]) for r in rows} for rows in splits.values()]
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            assert not ids[i] & ids[j] and not texts[i] & texts[j]


def test_extractive_answers_are_spans_and_generative_ones_are_composed():
    extractive = generate("extractive_qa")["train"]
    assert all(r["answers"][0] in r["context"] for r in extractive)
    for task in ("generative_qa", "dialogue_summary"):
        rows = generate(task)["train"]
        assert not any(r["answers"][0] in r["context"] for r in rows), task


@pytest.mark.parametrize("task", EMBEDDED_TASKS)
def test_memorising_training_pairs_does_not_answer_the_test_split(task):
    """Answer each test question with the training answer most often given to the same
    question text (or the most common training answer): this must almost always fail."""
    splits = generate(task)
    seen: dict = {}
    for row in splits["train"]:
        seen.setdefault(row["question"], Counter())[row["answers"][0]] += 1
    fallback = Counter(row["answers"][0] for row in splits["train"]).most_common(1)[0][0]
    hits = [(seen[r["question"]].most_common(1)[0][0] if r["question"] in seen else fallback) == r["answers"][0]
            for r in splits["test"]]
    assert sum(hits) / len(hits) < 0.1


@pytest.mark.parametrize("task, minimum", [("extractive_qa", 150), ("generative_qa", 1000), ("dialogue_summary", 1400)])
def test_answers_vary(task, minimum):
    assert len({row["answers"][0] for row in generate(task)["train"]}) >= minimum


def test_every_fact_sentence_names_its_person_before_the_fact():
    """A causal reader meets the subject before the value it binds to it."""
    from uld.embedded import every_question

    for index in range(200):
        context, questions = every_question("extractive_qa", index)
        first = questions[0][0].split()[2]  # "Where was <first> <surname> born?"
        sentences = context.split(". ")
        for _, answer in questions:
            holders = [s for s in sentences if answer in s]
            assert holders and all(first in s and s.index(first) < s.index(answer) for s in holders), (index, answer)


def test_every_extractive_answer_has_a_distractor_of_its_kind():
    """Two cities, three years, two jobs, two workplaces, two counts: the relation asked
    about, not the kind of answer, picks the span."""
    import re

    from uld.embedded import CITIES, OCCUPATIONS, ORGANISATIONS, every_question

    for index in range(200):
        context, questions = every_question("extractive_qa", index)
        assert len(questions) == 11 and len({answer for _, answer in questions}) >= 10
        assert sum(city in context for city in CITIES) >= 2 and questions[0][1] != questions[1][1]
        assert len(set(re.findall(r"\b(?:19|20)\d\d\b", context))) == 3
        assert sum(re.search(rf"\b{job}\b", context) is not None for job in OCCUPATIONS) >= 2
        assert sum(org in context for org in ORGANISATIONS) == 2
