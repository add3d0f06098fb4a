"""Diagnostics: entropies, the teacher's confidence, positions ULD compares alike."""

import math

import pytest
import torch

from uld.diagnostics import (answer_confidence, pairings, final_entropy, mean_answer_entropy, own_answer_confidence,
                             positions_alike, summarise)
from uld.distill import DistillConfig, run_distillation
from uld.models import load_model, load_tokenizer
from uld.tokenizers import train_tokenizer

TEXTS = ["the cat sat on the mat"] * 50


def test_answer_entropy_is_log_v_for_uniform_logits_and_zero_for_a_sure_one():
    labels = torch.tensor([[-100, -100, 3, 4]])
    assert mean_answer_entropy(torch.zeros(1, 4, 10), labels).item() == pytest.approx(math.log(10))
    sure = torch.full((1, 4, 10), -1e4)
    sure[..., 0] = 1e4
    assert mean_answer_entropy(sure, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_answer_entropy_reads_only_the_positions_that_predict_answers():
    logits = torch.zeros(1, 3, 8)
    logits[0, 0, 0] = 1e4  # predicts label 1, an answer token: sure
    # position 1 (uniform) predicts label 2 (-100) and position 2 predicts nothing
    assert mean_answer_entropy(logits, torch.tensor([[-100, 7, -100]])).item() == pytest.approx(0.0, abs=1e-6)
    assert mean_answer_entropy(logits, torch.tensor([[7, -100, -100]]), encoder_decoder=True).item() == \
        pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="no answer tokens"):
        mean_answer_entropy(logits, torch.full((1, 3), -100))


def test_positions_alike_is_one_for_one_tokenizer_and_zero_when_one_side_spells_by_bytes():
    words = train_tokenizer(TEXTS, kind="bpe", vocab_size=300)
    bytes_only = train_tokenizer(TEXTS, kind="bpe", vocab_size=10)  # no merges: one token per byte
    assert positions_alike(words, words, ["cat", "the mat"]) == 1.0
    assert positions_alike(words, bytes_only, ["cat"]) == 0.0
    with pytest.raises(ValueError, match="no answers"):
        positions_alike(words, words, [])


def test_the_teachers_confidence_is_one_value_per_answer_token():
    tokenizer, model = load_tokenizer("default-teacher"), load_model("default-teacher")
    answers = ["Lund", "the Harbour Library"]
    measured = answer_confidence(model, tokenizer, ["Question: where? Answer:"] * 2, answers)
    tokens = sum(len(tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in answers)
    assert measured["top1"].shape == measured["entropy"].shape == (tokens,)
    assert ((measured["top1"] > 0) & (measured["top1"] <= 1)).all()
    assert (measured["entropy"] >= 0).all() and (measured["entropy"] <= math.log(len(tokenizer)) + 1e-4).all()
    with pytest.raises(ValueError, match="one answer per prompt"):
        answer_confidence(model, tokenizer, ["a", "b"], ["c"])


def test_summarise_gives_quartiles_and_refuses_nothing():
    assert summarise([1, 2, 3, 4, 5])["median"] == 3.0
    with pytest.raises(ValueError):
        summarise([])


@pytest.mark.parametrize("method", ["sft", "uld"])
def test_training_logs_the_students_answer_entropy(tmp_path, method):
    results = run_distillation(DistillConfig(method=method, out=str(tmp_path), train_limit=16, eval_limit=4,
                                             batch_size=8, max_new_tokens=4, logging_steps=1),
                               echo=lambda line: None, progress=False)
    entropies = [entry["entropy"] for entry in results["log_history"] if "loss" in entry]
    vocabulary = len(load_tokenizer("default-student"))
    assert entropies and all(0 < value <= math.log(vocabulary) + 1e-4 for value in entropies)


def test_final_entropy_is_the_mean_of_the_last_logged_values_and_none_without_any():
    history = [{"entropy": 3.0}, {"eval_f1": 10.0}, {"entropy": 2.0}, {"entropy": 1.0}]
    assert final_entropy(history, last=2) == pytest.approx(1.5)
    assert final_entropy(history) == pytest.approx(2.0)
    assert final_entropy([{"loss": 1.0}]) is None


def test_own_answer_confidence_reads_back_the_answers_the_model_gives():
    from uld.data import load_task
    from uld.models import load_model, load_tokenizer

    tokenizer, model = load_tokenizer("teacher-extractive_qa"), load_model("teacher-extractive_qa")
    rows = load_task("extractive_qa", "validation", limit=4)
    measured, answers = own_answer_confidence(model, tokenizer, rows, "extractive_qa")
    assert len(answers) == 4 and all(answer == answer.strip() for answer in answers)
    tokens = sum(len(tokenizer(" " + answer, add_special_tokens=False)["input_ids"]) for answer in answers if answer)
    assert measured["top1"]["count"] == measured["entropy"]["count"] == tokens
    assert 0 < measured["top1"]["mean"] <= 1 and 0 <= measured["tokens_above_0.9"] <= 1


def test_pairings_show_what_each_rule_compares_around_a_number():
    """GPT-2 writes " 132" as one token, Qwen2 as a space and three digits: from there on the
    positional rule pairs other text; the offsets rule pairs the tokens that start together."""
    from uld.tokenizers import load_real_tokenizer

    gpt2, qwen2 = load_real_tokenizer("gpt2"), load_real_tokenizer("qwen2")
    found = pairings(gpt2, qwen2, "buys 11 umbrellas")
    assert found["teacher"] == [" buys", " 11", " umb", "rell", "as"]
    assert found["student"] == [" buys", " ", "1", "1", " umb", "rellas"]
    assert (found["positional"], found["positional_alike"]) == (5, 1)  # only " buys" faces itself
    assert (found["offsets"], found["offsets_alike"]) == (4, 2)  # " buys", " umb"; " 11"/" " and "rell" differ
    same = pairings(gpt2, gpt2, "buys 11 umbrellas")
    assert same["positional"] == same["positional_alike"] == same["offsets"] == same["offsets_alike"] == 5
