"""Task teachers: trained on fresh generated records, resumable, loaded like any kit model."""

from __future__ import annotations

import json

import pytest

from uld.data import load_task
from uld.generation import answer_questions
from uld.metrics import score_answers
from uld.models import load_model, load_tokenizer
from uld.task_teachers import FIRST_INDEX, TeacherRecipe, fresh_records, materialise_task_teacher, train_task_teacher

TINY = TeacherRecipe(steps=12, batch_size=4, checkpoint_every=5, validation_rows=4, warmup_steps=2)


class Stop(Exception):
    pass


def test_a_task_teacher_trains_resumes_and_loads_by_name(tmp_path, monkeypatch):
    import torch

    steps = []
    real_step = torch.optim.AdamW.step

    def counted(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 8:  # after the checkpoint at step 5
            raise Stop()
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted)
    with pytest.raises(Stop):
        materialise_task_teacher("teacher-generative_qa", tmp_path, TINY, echo=lambda line: None)
    assert (tmp_path / "models" / "teacher-generative_qa.partial" / "checkpoint.pt").exists()
    steps.clear()
    folder = materialise_task_teacher("teacher-generative_qa", tmp_path, TINY, echo=lambda line: None)
    assert len(steps) == TINY.steps - 5  # resumed after step 5
    record = json.loads((folder / "uld.json").read_text())
    assert record["task"] == "generative_qa" and record["trained_examples"] == 48 and record["shots"] == 0
    assert set(record["validation"]) == {"rougeLsum", "em"} and 0 <= record["validation"]["rougeLsum"] <= 100
    again = materialise_task_teacher("teacher-generative_qa", tmp_path, TINY, echo=lambda line: None)
    assert again == folder and len(steps) == TINY.steps - 5  # found in the cache, not trained again
    model = load_model(str(folder))
    assert type(model).__name__ == "LlamaForCausalLM"


def test_a_second_stage_starts_from_the_first_and_keeps_its_record(tmp_path):
    from dataclasses import replace

    first = train_task_teacher("extractive_qa", tmp_path / "first", replace(TINY, steps=4), echo=lambda line: None,
                               progress=False, command="first stage")
    second = train_task_teacher("extractive_qa", tmp_path / "second",
                                replace(TINY, steps=3, base=str(first), learning_rate=1e-3), echo=lambda line: None,
                                progress=False, command="second stage")
    record = json.loads((second / "uld.json").read_text())
    assert record["command"] == "second stage" and record["recipe"]["base"] == str(first)
    assert record["continued_from"]["command"] == "first stage" and record["continued_from"]["recipe"]["steps"] == 4
    fresh = train_task_teacher("extractive_qa", tmp_path / "fresh", replace(TINY, steps=2), echo=lambda line: None,
                               progress=False)
    assert "continued_from" not in json.loads((fresh / "uld.json").read_text())  # a tiny base model is no teacher


@pytest.mark.parametrize("task", ["extractive_qa", "dialogue_summary"])
def test_teachers_never_train_on_a_committed_record(task):
    records = fresh_records(task, 300)
    committed = {(row["context"], row["question"]) for split in ("train", "validation", "test")
                 for row in load_task(task, split)}
    assert len(records) == 300 and all(int(r["id"].rsplit("-", 1)[1]) >= FIRST_INDEX for r in records)
    assert not {(r["context"], r["question"]) for r in records} & committed
    assert fresh_records(task, 300) == records and fresh_records(task, 300, seed=1) != records


def test_only_embedded_tasks_have_teachers(tmp_path):
    with pytest.raises(ValueError, match="embedded tasks only"):
        train_task_teacher("squad", tmp_path / "x", TINY)
    with pytest.raises(ValueError, match="unknown task teacher"):
        materialise_task_teacher("teacher-squad", tmp_path)


def test_the_shipped_extractive_teacher_answers_as_recorded(tmp_path):
    """The shipped teacher (test F1 91: results.md) loads with the default teacher's
    vocabulary, records both training stages, and answers as its record says."""
    folder = materialise_task_teacher("teacher-extractive_qa")
    assert folder.parent.name == "teachers" and (folder / "model.safetensors").exists()
    record = json.loads((folder / "uld.json").read_text())
    assert record["validation"]["f1"] >= 90 and record["curve"][-1]["step"] == record["recipe"]["steps"]
    for stage in (record, record["continued_from"]):  # trained, then trained on at a lower rate
        assert stage["command"].startswith("python -m uld train-teacher --task extractive_qa")
    assert record["recipe"]["learning_rate"] < record["continued_from"]["recipe"]["learning_rate"]
    teacher = load_tokenizer("teacher-extractive_qa")
    assert teacher.get_vocab() == load_tokenizer("default-teacher", tmp_path).get_vocab()  # the kl control's vocabulary
    model = load_model("teacher-extractive_qa")
    rows = load_task("extractive_qa", "test", limit=40)
    predictions = answer_questions(model, teacher, rows, kind="extractive_qa", prompt="teacher")
    assert score_answers("extractive_qa", predictions, rows["answers"])["f1"] >= 80  # measured: 92.5

