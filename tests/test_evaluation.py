"""`uld.evaluation` and `python -m uld evaluate`: one model scored with its own prompt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uld.evaluation import evaluate_model, model_prompt
from uld.generation import answer_questions
from uld.metrics import score_answers
from uld.embedded import write_tasks

ROOT = Path(__file__).resolve().parents[1]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "uld", "evaluate", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_evaluate_writes_scores_and_predictions(tmp_path):
    done = cli("--model", "default-student", "--task", "extractive_qa", "--limit", "3", "--out", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["prompt"] == "student" and metrics["n_eval"] == 3 and metrics["split"] == "test"
    assert set(metrics["scores"]) == {"f1", "em"} and all(0 <= v <= 100 for v in metrics["scores"].values())
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["extractive_qa-01650", "extractive_qa-01651", "extractive_qa-01652"]


def test_tasks_dir_reads_regenerated_tasks(tmp_path):
    write_tasks(tmp_path / "tasks", seed=7, sizes={"train": 4, "validation": 2, "test": 3})
    results = evaluate_model("default-teacher", "dialogue_summary", tmp_path / "out", tasks_dir=tmp_path / "tasks",
                             shots=1, max_new_tokens=4, echo=lambda line: None)
    assert results["n_eval"] == 3 and results["shots"] == 1 and results["prompt"] == "teacher"
    ids = [json.loads(line)["id"] for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    committed = (ROOT / "data" / "tasks" / "dialogue_summary" / "test.jsonl").read_text()
    contexts = [json.loads(line)["context"] for line in (tmp_path / "tasks" / "dialogue_summary" / "test.jsonl")
                .read_text().splitlines()]
    assert len(ids) == 3 and not any(context in committed for context in contexts)


def test_teachers_answer_their_prompt_and_students_theirs():
    assert model_prompt("default-teacher") == "teacher"
    assert model_prompt("default-student") == "student"


def test_scores_carry_exact_match_for_questions_only():
    assert set(score_answers("extractive_qa", ["Lund"], [["Lund"]])) == {"f1", "em"}
    assert set(score_answers("dialogue_summary", ["Ada meets Bo."], [["Ada meets Bo."]])) == {"rougeLsum"}


def test_an_unknown_prompt_is_refused():
    with pytest.raises(ValueError, match="prompt must be one of"):
        answer_questions(None, None, [], kind="extractive_qa", prompt="chat")


@pytest.mark.parametrize("args, message", [
    (("--task", "nope"), "unknown task 'nope'"),
    (("--task", "extractive_qa", "--tasks-dir", "/no/such/dir"), "does not exist"),
    (("--task", "extractive_qa", "--shots", "-1"), "whole number >= 0"),
    (("--task", "extractive_qa", "--limit", "0"), "--limit must be at least 1"),
    (("--task", "extractive_qa", "--split", "dev"), "unknown split 'dev'"),
])
def test_bad_requests_exit_2_with_one_line(tmp_path, args, message):
    done = cli("--model", "default-student", *args, "--out", tmp_path)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("chat", [False, True])
def test_a_teacher_is_scored_on_the_prompts_it_teaches_with(tmp_path, monkeypatch, chat):
    """The same prompt text and the same special-token rule as `generate_teacher_answers`
    (a chat template writes its own BOS: none is added on top)."""
    import uld.generation
    import uld.teacher_answers
    from uld.data import load_task
    from uld.models import load_tokenizer

    tokenizer = load_tokenizer("default-teacher")
    if chat:
        tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n"
                                   "{% endfor %}<assistant>")
    calls = {"evaluation": [], "teaching": []}

    def spy(into):
        def greedy(model, tokenizer, prompts, *, max_new_tokens, add_special_tokens=True, max_length=None):
            into.extend((prompt, add_special_tokens) for prompt in prompts)
            return ["an answer"] * len(prompts)
        return greedy

    rows, pool = load_task("extractive_qa", "test", limit=5), load_task("extractive_qa", "train", limit=20)
    monkeypatch.setattr(uld.generation, "greedy_first_lines", spy(calls["evaluation"]))
    monkeypatch.setattr(uld.teacher_answers, "greedy_first_lines", spy(calls["teaching"]))
    answer_questions(None, tokenizer, rows, kind="extractive_qa", prompt="teacher", shots=2, shot_pool=pool)
    uld.teacher_answers.generate_teacher_answers(None, tokenizer, rows, kind="extractive_qa", run_dir=tmp_path,
                                                 shots=2, shot_pool=pool, progress=False)
    assert calls["evaluation"] == calls["teaching"] and len(calls["evaluation"]) == 5
    assert all(special is not chat for _, special in calls["evaluation"])
    assert chat == calls["evaluation"][0][0].startswith(tokenizer.bos_token)
