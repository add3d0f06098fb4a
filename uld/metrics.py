"""Scores the paper reports: SQuAD-style F1 and exact match, ROUGE-Lsum, BERTScore.

Every function takes ``predictions`` (strings) and ``references`` (one list of acceptable
answers per prediction), scores each prediction against its best reference, and returns
the mean on a 0-100 scale, as the paper's tables do.

>>> round(squad_f1(["the Lund harbour"], [["Lund harbour", "Porto"]]), 2)
100.0
>>> round(squad_f1(["Lund"], [["Lund harbour"]]), 2)
66.67
>>> exact_match(["The Lund."], [["lund"]])
100.0
"""

from __future__ import annotations

import re
import string
from collections import Counter

__all__ = ["normalise_answer", "squad_f1", "exact_match", "rouge_lsum", "bertscore_f1", "score", "per_example",
           "top_answer_share", "score_answers", "METRICS"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalise_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1(prediction: str, reference: str) -> float:
    predicted, gold = normalise_answer(prediction).split(), normalise_answer(reference).split()
    if not predicted or not gold:
        return float(predicted == gold)
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _check(predictions, references) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    for refs in references:
        if isinstance(refs, str) or not refs:
            raise ValueError("each reference must be a non-empty list of strings")


def squad_f1(predictions: list[str], references: list[list[str]]) -> float:
    """Mean token F1 (best reference per prediction), 0-100."""
    return _mean(_squad_f1_each(predictions, references))


def exact_match(predictions: list[str], references: list[list[str]]) -> float:
    """Share of predictions equal to a reference after normalisation, 0-100."""
    return _mean(_exact_match_each(predictions, references))


def rouge_lsum(predictions: list[str], references: list[list[str]]) -> float:
    """Mean ROUGE-Lsum F-measure (``rouge-score``, no stemming; best reference), 0-100.

    ROUGE-Lsum treats newlines as sentence boundaries; for one-line texts it equals ROUGE-L.

    >>> round(rouge_lsum(["Ada and Bo meet at noon."], [["Ada meets Bo at noon on Friday."]]), 2)
    61.54
    """
    return _mean(_rouge_lsum_each(predictions, references))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _squad_f1_each(predictions, references) -> list[float]:
    _check(predictions, references)
    return [100 * max(_f1(p, r) for r in refs) for p, refs in zip(predictions, references)]


def _exact_match_each(predictions, references) -> list[float]:
    _check(predictions, references)
    return [100.0 * any(normalise_answer(p) == normalise_answer(r) for r in refs)
            for p, refs in zip(predictions, references)]


def _rouge_lsum_each(predictions, references) -> list[float]:
    from rouge_score import rouge_scorer

    _check(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=False)
    return [100 * max(scorer.score(r, p)["rougeLsum"].fmeasure for r in refs) for p, refs in zip(predictions, references)]


def bertscore_f1(predictions: list[str], references: list[list[str]], model_type: str = "roberta-large") -> float:
    """Mean BERTScore F1 (best reference), 0-100; needs the ``bert-score`` package and the
    scoring model (from the hub, or cached). Offline without them: a clear RuntimeError."""
    return _mean(_bertscore_f1_each(predictions, references, model_type))


def _bertscore_f1_each(predictions, references, model_type: str = "roberta-large") -> list[float]:
    _check(predictions, references)
    try:
        from bert_score import score as bert_score
    except ImportError:
        raise RuntimeError("BERTScore needs the bert-score package: pip install bert-score") from None
    flat_predictions = [p for p, refs in zip(predictions, references) for _ in refs]
    flat_references = [r for refs in references for r in refs]
    try:
        _, _, f1 = bert_score(flat_predictions, flat_references, model_type=model_type, verbose=False)
    except OSError as failure:
        raise RuntimeError(f"BERTScore cannot load {model_type}: {str(failure).splitlines()[0]}") from None
    best, start = [], 0
    for refs in references:
        best.append(100 * float(f1[start:start + len(refs)].max()))
        start += len(refs)
    return best


METRICS = {"f1": squad_f1, "em": exact_match, "rougeLsum": rouge_lsum, "bertscore": bertscore_f1}
IN_WORDS = {"f1": "word F1 against the gold answers (0-100)", "em": "exact match (% of questions)",
            "rougeLsum": "ROUGE-Lsum against the gold answers (0-100)", "bertscore": "BERTScore F1 (0-100)"}
_PER_EXAMPLE = {"f1": _squad_f1_each, "em": _exact_match_each, "rougeLsum": _rouge_lsum_each,
                "bertscore": _bertscore_f1_each}


def score(metric: str, predictions: list[str], references: list[list[str]]) -> float:
    """Score by metric name (``f1``, ``em``, ``rougeLsum``, ``bertscore``)."""
    return _mean(per_example(metric, predictions, references))


def per_example(metric: str, predictions: list[str], references: list[list[str]]) -> list[float]:
    """Each prediction's score (0-100) against its best reference; `score` is their mean.

    >>> per_example("f1", ["Lund", "Porto"], [["Lund harbour"], ["Porto"]])
    [66.66666666666666, 100.0]
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    return _PER_EXAMPLE[metric](predictions, references)


def top_answer_share(predictions: list[str]) -> tuple[str, float]:
    """The most common answer (normalised as SQuAD does) and its share of ``predictions``:
    a student that gives one answer to every question has share 1.

    >>> top_answer_share(["Lund", "lund.", "Porto", "Cork"])
    ('lund', 0.5)
    """
    if not predictions:
        raise ValueError("no predictions to count")
    answer, count = Counter(normalise_answer(p) for p in predictions).most_common(1)[0]
    return answer, count / len(predictions)


def score_answers(task: str, predictions: list[str], references: list[list[str]]) -> dict:
    """``{metric: value}`` for ``task`` (its metric, plus ``em`` for question answering), 0-100."""
    from uld.data import TASKS

    spec = TASKS[task]
    scores = {spec.metric: score(spec.metric, predictions, references)}
    if spec.kind != "summarization":
        scores["em"] = exact_match(predictions, references)
    return scores
