"""Teacher answers: few-shot, first line, resumable without loss or repetition."""

from __future__ import annotations

import json

import pytest

from uld.data import load_task
from uld.models import load_model, load_tokenizer
from uld.teacher_answers import ANSWERS_FILE, generate_teacher_answers, load_teacher_answers


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    cache = tmp_path_factory.mktemp("teacher-cache")
    return load_model("default-teacher", cache=cache), load_tokenizer("default-teacher", cache)


class CountingModel:
    """Wraps a model to count generate() calls and to fail after a number of them."""

    def __init__(self, model, fail_after=None):
        self.model, self.calls, self.fail_after = model, 0, fail_after

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls += 1
        return self.model.generate(**kwargs)


def test_answers_are_generated_once_and_resume_after_an_interruption(teacher, tmp_path):
    model, tokenizer = teacher
    rows = load_task("extractive_qa", "train", limit=10)
    options = dict(kind="extractive_qa", shots=2, batch_size=4, max_new_tokens=6, progress=False)

    reference = generate_teacher_answers(model, tokenizer, rows, run_dir=tmp_path / "whole", **options)
    assert reference.column_names == ["id", "context", "question", "answers", "teacher_answer"]
    assert all("\n" not in answer for answer in reference["teacher_answer"])

    interrupted = CountingModel(model, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        generate_teacher_answers(interrupted, tokenizer, rows, run_dir=tmp_path / "resumed", **options)
    journal = tmp_path / "resumed" / ANSWERS_FILE
    assert len(journal.read_text().splitlines()) == 8  # two finished batches kept
    with open(journal, "a") as torn:
        torn.write('{"id": "extractive_qa-0')  # a write cut short

    resumed = CountingModel(model)
    answers = generate_teacher_answers(resumed, tokenizer, rows, run_dir=tmp_path / "resumed", **options)
    assert resumed.calls == 1  # only the last 2 rows were left
    assert answers["teacher_answer"] == reference["teacher_answer"]
    assert all(json.loads(line) for line in journal.read_text().splitlines())

    again = CountingModel(model)
    generate_teacher_answers(again, tokenizer, rows, run_dir=tmp_path / "resumed", **options)
    assert again.calls == 0


def test_loading_incomplete_answers_says_what_is_missing(tmp_path):
    rows = load_task("extractive_qa", "train", limit=3)
    (tmp_path / ANSWERS_FILE).write_text(json.dumps({"id": rows[0]["id"], "teacher_answer": "x"}) + "\n")
    with pytest.raises(ValueError, match="2 rows have no teacher answer yet"):
        load_teacher_answers(tmp_path, rows)


def test_answers_written_under_other_settings_are_refused_not_reused(teacher, tmp_path):
    from uld.teacher_answers import SETTINGS_FILE, answer_settings, record_settings

    model, tokenizer = teacher
    rows = load_task("extractive_qa", "train", limit=4)
    written = answer_settings("default-teacher", shots=0, max_new_tokens=4, seed=0)
    record_settings(tmp_path, written)
    generate_teacher_answers(model, tokenizer, rows, kind="extractive_qa", run_dir=tmp_path, max_new_tokens=4,
                             progress=False)
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == written
    record_settings(tmp_path, written)  # the same settings: the answers are theirs
    assert len(load_teacher_answers(tmp_path, rows)) == 4
    other = answer_settings("teacher-extractive_qa", shots=0, max_new_tokens=8, seed=0)
    message = ("written under other settings \\(max_new_tokens 4 there, 8 here; teacher 'default-teacher' there, "
               "'teacher-extractive_qa' here\\)")
    with pytest.raises(ValueError, match=message):
        record_settings(tmp_path, other)
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == written  # refused, not rewritten
