"""Paired comparisons: is one method above, below, or indistinguishable from another?

Two methods answered the same test questions, each with the same seeds. The unit of the
comparison is the question: its score under a method is the mean over that method's seeds,
and the difference ``a - b`` is resampled over questions with `scipy.stats.bootstrap`
(``paired=True``, percentile interval), so a method that wins on a handful of questions
does not look like a method that wins everywhere. The verdict reads the interval:

* ``above``: the whole interval is above zero;
* ``below``: the whole interval is below zero;
* ``inconclusive``: the interval contains zero, **or** every seed of both methods gave
  the same scores on every question, so nothing measured the run-to-run noise (a method
  that answers identically whatever its data order, e.g. one that collapsed to one
  answer, cannot be called better from one draw repeated).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> b = rng.uniform(0, 100, size=(3, 200))                      # [seeds, questions]
>>> a = b + 5 + rng.normal(0, 3, size=b.shape)                   # 5 points better, noisily
>>> found = paired_difference(a, b)
>>> found.verdict, round(found.difference, 1), found.low > 0
('above', 4.8, True)
>>> paired_difference(b, b).verdict
'inconclusive'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Difference", "paired_difference", "question_scores", "compare_folders", "score_interval", "VERDICTS"]

VERDICTS = ("above", "below", "inconclusive")


@dataclass(frozen=True)
class Difference:
    """``a - b`` in score points with its interval, and what it allows one to say."""

    difference: float
    low: float
    high: float
    confidence: float
    verdict: str  # one of VERDICTS
    questions: int
    seeds: tuple[int, int]  # seeds behind a and behind b
    reason: str  # why the verdict is what it is, in a few words

    def describe(self, a: str = "a", b: str = "b") -> str:
        """One sentence, e.g. ``uld is below seqkd: -2.1 points, 95% interval [-3.4, -0.8]``."""
        interval = f"{self.difference:+.1f} points, {self.confidence:.0%} interval [{self.low:+.1f}, {self.high:+.1f}]"
        if self.verdict == "inconclusive":
            return f"{a} against {b} is inconclusive: {interval} ({self.reason})"
        return f"{a} is {self.verdict} {b}: {interval}"


def paired_difference(a, b, confidence: float = 0.95, resamples: int = 9999, seed: int = 0) -> Difference:
    """Compare per-question scores ``a`` and ``b`` (arrays ``[seeds, questions]``, or one row).

    Question ``q`` of ``a`` and of ``b`` must be the same question; the seed counts may
    differ (a deterministic method such as ``raw`` has one). Raises ValueError when the
    shapes do not pair or a score is not finite.
    """
    from scipy.stats import bootstrap

    a, b = _per_seed(a, "a"), _per_seed(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has {a.shape[1]} questions and b {b.shape[1]}: they must be the same questions")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    per_question_a, per_question_b = a.mean(axis=0), b.mean(axis=0)
    difference = float(per_question_a.mean() - per_question_b.mean())
    differences = per_question_a - per_question_b
    if np.all(differences == differences[0]):  # the bootstrap of a constant is that constant
        low = high = difference
    else:
        result = bootstrap((per_question_a, per_question_b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                           paired=True, vectorized=True, n_resamples=resamples, confidence_level=confidence,
                           method="percentile", rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    seeds_vary = _varies(a) or _varies(b)
    if not seeds_vary:
        verdict, reason = "inconclusive", "every seed gave the same scores: the run-to-run noise is unmeasured"
    elif low > 0:
        verdict, reason = "above", "the interval lies above zero"
    elif high < 0:
        verdict, reason = "below", "the interval lies below zero"
    else:
        verdict, reason = "inconclusive", "the interval contains zero"
    return Difference(difference, low, high, confidence, verdict, a.shape[1], (a.shape[0], b.shape[0]), reason)


def question_scores(folder, metric: str) -> dict[str, float]:
    """``{question id: score}`` of one finished run, from its ``predictions.jsonl``."""
    from uld.evaluation import read_predictions
    from uld.metrics import per_example

    records = read_predictions(folder)
    values = per_example(metric, [r["prediction"] for r in records], [r["references"] for r in records])
    return {str(r["id"]): value for r, value in zip(records, values)}


def compare_folders(first: list, second: list, metric: str, confidence: float = 0.95) -> Difference:
    """`paired_difference` of two methods given their run folders (one per seed).

    Every run must have answered the same questions; ValueError names a mismatch.
    """
    if not first or not second:
        raise ValueError("each side needs at least one finished run")
    scores = _scores_by_question([*first, *second], metric)
    a, b = scores[:len(first)], scores[len(first):]
    return paired_difference(a, b, confidence)


def score_interval(folders: list, metric: str, confidence: float = 0.95, resamples: int = 9999,
                   seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: one method's score over its runs (one folder per seed) and a
    bootstrap interval of that mean over questions, each question's score averaged over
    seeds: the error bar of a results figure.

    >>> import numpy as np, json, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> lines = [{"id": i, "prediction": "a" if i % 2 else "b", "references": ["a"]} for i in range(100)]
    >>> _ = (folder / "predictions.jsonl").write_text("\\n".join(json.dumps(line) for line in lines))
    >>> mean, low, high = score_interval([folder], "em")
    >>> mean, low < 50 < high
    (50.0, True)
    """
    from scipy.stats import bootstrap

    if not folders:
        raise ValueError("score_interval needs at least one finished run")
    per_question = _per_seed(_scores_by_question(folders, metric), "scores").mean(axis=0)
    mean = float(per_question.mean())
    if np.all(per_question == per_question[0]):
        return mean, mean, mean
    result = bootstrap((per_question,), np.mean, vectorized=True, n_resamples=resamples, confidence_level=confidence,
                       method="percentile", rng=np.random.default_rng(seed))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def _scores_by_question(folders: list, metric: str) -> list[list[float]]:
    """One row per run folder: its score on each question, the questions in one order;
    ValueError when the runs did not answer the same questions."""
    tables = [question_scores(folder, metric) for folder in folders]
    questions = sorted(tables[0])
    if any(sorted(table) != questions for table in tables):
        raise ValueError("the runs did not answer the same questions: compare runs on one evaluation split")
    return [[table[q] for q in questions] for table in tables]


def _per_seed(scores, name: str) -> np.ndarray:
    array = np.asarray(scores, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[0] == 0:
        raise ValueError(f"{name} must hold scores as [seeds, questions], got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds a score that is not a finite number")
    return array


def _varies(scores: np.ndarray) -> bool:
    """Whether two seeds gave different scores on some question."""
    return scores.shape[0] > 1 and bool(np.any(scores != scores[0]))
