"""The five ways the kit trains a student, in one table: what each needs, what it ignores.

=======  ================================  ===============  ===============  ==========
method   what the student learns from      teacher answers  teacher logits   extra loss
=======  ================================  ===============  ===============  ==========
raw      nothing (the untrained student)   no               no               none
sft      the gold answers                  no               no               none
seqkd    the teacher's generated answers   yes              no               none
uld      the same + lambda x ULD           yes              yes              ``ULDLoss``
kl       the same + lambda x token KL      yes              yes              ``TokenKLLoss``
=======  ================================  ===============  ===============  ==========

Every training method minimises the student's cross-entropy on its target answers;
``uld`` and ``kl`` add ``distillation_weight`` (lambda) times a distance between the two
models' next-token distributions, which is why they read the teacher's logits (live, or
from the teacher cache). ``kl`` needs one vocabulary shared by both models (the positive
control); ``seqkd`` is the paper's lambda = 0 baseline ("teacher text").

Nothing here imports torch or transformers: checking a config stays cheap.

>>> METHODS["seqkd"].teacher_answers, METHODS["seqkd"].teacher_logits
(True, False)
>>> [name for name, method in METHODS.items() if method.teacher_logits]
['uld', 'kl']
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Method", "METHODS", "PAPER_DISTILLATION_WEIGHT", "method", "unread_settings", "needs_teacher_answers",
           "needs_teacher_logits"]

# The paper's lambda for its ULD runs; `DistillConfig` takes it as its default, while
# `ULDLoss` on its own defaults to 1.0 (a plain sum of cross-entropy and distance).
PAPER_DISTILLATION_WEIGHT = 1.5

# Settings that act only on the distance between the two distributions, or only on training.
_DISTANCE = ("top_k", "teacher_cache", "teacher_cache_top_k", "student_temperature", "teacher_temperature",
             "skip_teacher_eos", "alignment", "hybrid_loss", "matched_weight", "unmatched_weight")
_TRAINING = ("train_limit", "train_fraction", "epochs", "learning_rate", "weight_decay", "batch_size", "eval_steps")


@dataclass(frozen=True)
class Method:
    """One row of the table: ``loss`` names the distance added to the cross-entropy
    (``None``: cross-entropy only); ``unread`` lists the `DistillConfig` fields a run of this
    method never reads (any value gives the same run)."""

    name: str
    trains: bool
    teacher_answers: bool
    teacher_logits: bool
    loss: str | None
    unread: tuple[str, ...]


METHODS = {m.name: m for m in (
    Method("raw", trains=False, teacher_answers=False, teacher_logits=False, loss=None,
           unread=("distillation_weight", "seed", "teacher", "teacher_shots", *_TRAINING, *_DISTANCE)),
    Method("sft", trains=True, teacher_answers=False, teacher_logits=False, loss=None,
           unread=("distillation_weight", "teacher", "teacher_shots", *_DISTANCE)),
    Method("seqkd", trains=True, teacher_answers=True, teacher_logits=False, loss=None,
           unread=("distillation_weight", *_DISTANCE)),
    Method("uld", trains=True, teacher_answers=True, teacher_logits=True, loss="uld", unread=()),
    Method("kl", trains=True, teacher_answers=True, teacher_logits=True, loss="kl", unread=("top_k",)),
)}


def method(name: str) -> Method:
    """The row for ``name``; an unknown name raises ``ValueError`` listing the known ones.

    >>> method("uld").loss
    'uld'
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def unread_settings(name: str) -> tuple[str, ...]:
    """The `DistillConfig` fields a run of method ``name`` never reads.

    >>> "distillation_weight" in unread_settings("seqkd"), unread_settings("uld")
    (True, ())
    """
    return method(name).unread


def needs_teacher_answers(name: str) -> bool:
    """Whether method ``name`` trains on the teacher's generated answers."""
    return method(name).teacher_answers


def needs_teacher_logits(name: str) -> bool:
    """Whether method ``name`` reads the teacher's next-token distributions."""
    return method(name).teacher_logits
