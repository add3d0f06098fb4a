"""Metrics against hand-computed values and the official SQuAD normalisation."""

from __future__ import annotations

import pytest

from uld.metrics import METRICS, bertscore_f1, exact_match, normalise_answer, rouge_lsum, score, squad_f1


def test_normalisation_follows_squad():
    assert normalise_answer("  The  Harbour, of Lund!  ") == "harbour of lund"
    assert normalise_answer("An apple a day") == "apple day"


def test_f1_by_hand():
    # prediction "born in lund 1990" vs gold "lund 1990": 2 common tokens, precision 2/4, recall 2/2
    assert squad_f1(["born in Lund 1990"], [["Lund 1990"]]) == pytest.approx(100 * 2 * 0.5 * 1 / 1.5)
    assert squad_f1(["nothing shared"], [["Lund"]]) == 0.0
    assert squad_f1(["", "Lund"], [["Lund"], ["Porto", "Lund"]]) == pytest.approx(50.0)
    assert squad_f1(["the"], [["a"]]) == 100.0  # both normalise to empty
    assert exact_match(["lund", "Porto"], [["Lund."], ["Lund"]]) == 50.0


def test_rouge_lsum_by_hand_and_sentences():
    # LCS of "ada and bo meet at noon" / "ada meets bo at noon on friday" = ada bo at noon (4):
    # precision 4/6, recall 4/7
    assert rouge_lsum(["Ada and Bo meet at noon."], [["Ada meets Bo at noon on Friday."]]) == pytest.approx(
        100 * 2 * (4 / 6) * (4 / 7) / (4 / 6 + 4 / 7))
    assert rouge_lsum(["same text"], [["other words", "same text"]]) == pytest.approx(100.0)
    assert rouge_lsum(["a b\nc d"], [["c d\na b"]]) == pytest.approx(100.0)  # sentence-level LCS union


@pytest.mark.parametrize("metric", ["f1", "em", "rougeLsum"])
def test_bad_inputs_are_value_errors(metric):
    with pytest.raises(ValueError, match="predictions but"):
        score(metric, ["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="non-empty list"):
        score(metric, ["a"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        score(metric, [], [])
    with pytest.raises(ValueError, match="unknown metric"):
        score("bleu", ["a"], [["a"]])
    assert set(METRICS) == {"f1", "em", "rougeLsum", "bertscore"}


def test_bertscore_explains_what_it_needs_offline():
    with pytest.raises(RuntimeError, match="bert-score|cannot load"):
        bertscore_f1(["a"], [["a"]])
