"""Pretrained students: language modelling on generator text, never on a question or an answer."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from uld.data import load_task
from uld.embedded import pretraining_text
from uld.models import load_model, load_tokenizer
from uld.pretraining import (STAGES, PretrainingRecipe, materialise_pretrained_student, pretrain_student,
                             pretraining_examples)

ROOT = Path(__file__).resolve().parents[1]
TINY = PretrainingRecipe(steps=20, batch_size=4, warmup_steps=2, checkpoint_every=10, learning_rate=1e-2)


def test_pretraining_lowers_the_held_out_loss_and_loads_by_name(tmp_path):
    folder = materialise_pretrained_student("pretrained-student", tmp_path, TINY, echo=lambda line: None)
    record = json.loads((folder / "uld.json").read_text())
    assert record["base"] == "default-student" and record["role"] == "student" and record["texts"] == 80
    assert record["held_out_loss"]["after"] < record["held_out_loss"]["before"]
    model = load_model(str(folder))
    assert type(model).__name__ == "GPTNeoXForCausalLM"


def test_a_second_stage_continues_the_first_and_keeps_its_record(tmp_path):
    first = pretrain_student("pretrained-student", tmp_path / "first", TINY, cache=tmp_path, echo=lambda line: None,
                             progress=False, command="stage one")
    second = pretrain_student("pretrained-student", tmp_path / "second", replace(TINY, base=str(first)),
                              cache=tmp_path, echo=lambda line: None, progress=False)
    record = json.loads((second / "uld.json").read_text())
    earlier = record["continued_from"]
    assert earlier["command"] == "stage one" and record["recipe"]["base"] == str(first)
    assert record["held_out_loss"]["before"] == pytest.approx(earlier["held_out_loss"]["after"], abs=1e-3)
    assert record["held_out_loss"]["after"] < record["held_out_loss"]["before"]
    with pytest.raises(ValueError, match="not a pretrained pretrained-student-shared"):
        pretrain_student("pretrained-student-shared", tmp_path / "third", replace(TINY, base=str(first)),
                         cache=tmp_path, echo=lambda line: None, progress=False)


def test_the_control_student_shares_the_teachers_vocabulary(tmp_path):
    teacher, control = load_tokenizer("default-teacher", tmp_path), load_tokenizer("default-student-shared", tmp_path)
    student = load_tokenizer("default-student", tmp_path)
    assert teacher.get_vocab() == control.get_vocab() != student.get_vocab()


def test_pretraining_texts_hold_no_question_and_no_committed_context():
    texts = [pretraining_text(index) for index in range(300)]
    assert not any("Question:" in text or "Answer:" in text or "Summary:" in text for text in texts)
    committed = {row["context"] for task in ("extractive_qa", "generative_qa", "dialogue_summary")
                 for split in ("train", "validation", "test") for row in load_task(task, split)}
    assert not any(text.split("\n")[0] in committed or text in committed for text in texts)
    assert sum(text.startswith("#Person1#") for text in texts) in range(70, 130)  # about one in three


def test_examples_end_with_eos_and_fit(tmp_path):
    tokenizer = load_tokenizer("default-student", tmp_path)
    examples = pretraining_examples(tokenizer, 5, max_length=32)
    assert all(e["input_ids"][-1] == tokenizer.eos_token_id and len(e["input_ids"]) <= 32 for e in examples)


def test_unknown_students_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown pretrained student"):
        materialise_pretrained_student("pretrained-giant", tmp_path)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "uld", *map(str, args)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


@pytest.mark.parametrize("args, message", [
    (("pretrain-student", "--name", "pretrained-student", "--set", "steps=many"), "steps must be a int"),
    (("pretrain-student", "--name", "pretrained-student", "--set", "epochs=3"), "expected FIELD=VALUE"),
    (("pretrain-student", "--name", "pretrained-giant"), "unknown pretrained student"),
    (("train-teacher", "--task", "squad"), "embedded tasks only"),
])
def test_bad_training_requests_exit_2_with_one_line(tmp_path, args, message):
    done = cli(*args, "--out", tmp_path / "model")
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "model").exists()


def test_a_trained_model_is_not_overwritten(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "uld.json").write_text("{}")
    done = cli("train-teacher", "--task", "extractive_qa", "--out", tmp_path / "model")
    assert done.returncode == 2 and "already holds a trained model" in done.stderr


@pytest.mark.parametrize("name, base", [("pretrained-student", "default-student"),
                                        ("pretrained-student-shared", "default-student-shared"),
                                        ("pretrained-student-large", "default-student-large"),
                                        ("pretrained-student-shared-large", "default-student-shared-large")])
def test_the_shipped_students_load_by_name_with_their_bases_vocabulary(name, base, tmp_path):
    """Committed under data/students with the command that rebuilds them; a change of the
    embedded corpus (hence of the vocabularies) without pretraining again fails here."""
    folder = materialise_pretrained_student(name)
    assert folder == ROOT / "data" / "students" / name
    record = json.loads((folder / "uld.json").read_text())
    command = f"python -m uld pretrain-student --name {name}"
    assert record["command"].startswith(command) and record["command"].endswith(f"--out data/students/{name}")
    first = record.get("continued_from", record)  # a second stage keeps its first stage's record
    assert 1 + ("continued_from" in record) == STAGES.get(name, 1)  # what rebuilding it would run
    assert first["command"].startswith(command)
    assert record["held_out_loss"]["after"] <= first["held_out_loss"]["after"] < 1.0 < first["held_out_loss"]["before"]
    assert load_tokenizer(name).get_vocab() == load_tokenizer(base, tmp_path).get_vocab()
    assert type(load_model(name)).__name__ == "GPTNeoXForCausalLM"
