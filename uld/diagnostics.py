"""Diagnostics that explain a distillation result with measurements, not stories.

Three questions decide what logit distillation can carry from a teacher to a student:

* How sure is the teacher of its own answers? (`answer_confidence`: the top-1
  probability and entropy of its next-token distribution at every token of its answers.)
  A teacher that puts all its mass on one token has nothing beyond its answer to give: the
  sorted distribution is then one-hot, and ULD teaches what the teacher's answer already does.
* Does the student follow the teacher's uncertainty? (`DistillationTrainer` logs the
  student's mean entropy on answer tokens as ``entropy`` beside its loss, for every method,
  so the curves of ``seqkd`` and ``uld`` can be set against the teacher's.)
* When ULD compares the two answers position by position, do the two tokens at a position
  stand for the same text? (`positions_alike`: the share of compared positions whose two
  tokens cover the same characters of the answer.) Where they do not, ULD matches the shape
  of a distribution over one piece of text with one over another.

>>> from uld.tokenizers import train_tokenizer
>>> tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="bpe", vocab_size=300)
>>> positions_alike(tok, tok, ["the cat"])
1.0
"""

from __future__ import annotations

import numpy as np
import torch

from uld.alignment import token_spans

__all__ = ["pairings", "answer_confidence", "own_answer_confidence", "final_entropy", "entropy", "mean_answer_entropy",
           "positions_alike", "character_spans", "summarise"]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of the softmax of ``logits`` ``[..., V]`` -> ``[...]``.

    >>> round(float(entropy(torch.zeros(4))), 4)  # uniform over 4: log 4
    1.3863
    """
    logits = logits.float()
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


@torch.no_grad()
def mean_answer_entropy(logits: torch.Tensor, labels: torch.Tensor, encoder_decoder: bool = False) -> torch.Tensor:
    """The mean entropy (nats) of the distributions that predict answer tokens.

    ``logits`` ``[B, T, V]``, ``labels`` ``[B, T]`` with -100 outside answers; a decoder's
    logits at ``t`` predict the label at ``t + 1``, an encoder-decoder's the label at ``t``.

    >>> labels = torch.tensor([[-100, 5, 6]])
    >>> round(float(mean_answer_entropy(torch.zeros(1, 3, 4), labels)), 4)
    1.3863
    """
    if not encoder_decoder:
        logits, labels = logits[:, :-1], labels[:, 1:]
    chosen = labels != -100
    if not chosen.any():
        raise ValueError("no answer tokens in the batch (every label is -100)")
    return entropy(logits[chosen]).mean()


@torch.no_grad()
def answer_confidence(model, tokenizer, prompts: list[str], answers: list[str]) -> dict:
    """The model's next-token distribution at every token of ``answers``, each read after its prompt.

    Returns ``{"top1": [n], "entropy": [n]}`` (numpy, one value per answer token over all
    answers: the top-1 probability and the entropy in nats). An answer is tokenised as it
    is trained: `` " " + answer`` after the prompt.

    >>> from uld.models import load_model, load_tokenizer
    >>> tok, model = load_tokenizer("tiny-llama"), load_model("tiny-llama")
    >>> measured = answer_confidence(model, tok, ["Question: where? Answer:"], ["Lund"])
    >>> measured["top1"].shape == measured["entropy"].shape, bool((measured["top1"] <= 1).all())
    (True, True)
    """
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(f"need one answer per prompt and at least one; got {len(prompts)} prompts, "
                         f"{len(answers)} answers")
    top1, entropies = [], []
    model.eval()
    device = next(model.parameters()).device
    for prompt, answer in zip(prompts, answers):  # one at a time: no padding to get wrong
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids], device=device)
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1]  # the positions predicting the answer
        top1.append(torch.softmax(logits.float(), -1).max(-1).values.cpu())
        entropies.append(entropy(logits).cpu())
    return {"top1": torch.cat(top1).numpy(), "entropy": torch.cat(entropies).numpy()}


def own_answer_confidence(model, tokenizer, rows, kind: str) -> tuple[dict, list[str]]:
    """How sure a teacher is of the answers it gives: it answers ``rows`` greedily with its own
    prompt, then `answer_confidence` reads each non-empty answer back after that prompt.

    Returns ``({"top1": summary, "entropy": summary, "tokens_above_0.9": share}, answers)``:
    the `summarise` of each measure over all tokens of the non-empty answers, the share of
    those tokens whose top-1 probability exceeds 0.9, and every row's answer (stripped; empty
    where it gave none), so that they can also be scored.
    """
    from uld.generation import answer_questions
    from uld.prompts import teacher_prompt

    answers = [a.strip() for a in answer_questions(model, tokenizer, rows, kind=kind, prompt="teacher")]
    kept = [(row, answer) for row, answer in zip(rows, answers) if answer]
    if not kept:
        raise ValueError("the model gave no non-empty answer to read back")
    prompts = [teacher_prompt(tokenizer, kind, row["context"], row["question"], []) for row, _ in kept]
    measured = answer_confidence(model, tokenizer, prompts, [answer for _, answer in kept])
    return ({"top1": summarise(measured["top1"]), "entropy": summarise(measured["entropy"]),
             "tokens_above_0.9": round(float((measured["top1"] > 0.9).mean()), 4)}, answers)


def final_entropy(log_history: list[dict], last: int = 3) -> float | None:
    """The student's answer entropy at the end of training: the mean of the last ``last``
    ``entropy`` values its Trainer logged (None when it logged none, e.g. ``raw``).

    >>> final_entropy([{"entropy": 2.0}, {"loss": 1.0}, {"entropy": 1.0}, {"entropy": 0.5}], last=2)
    0.75
    """
    logged = [entry["entropy"] for entry in log_history if "entropy" in entry]
    return float(np.mean(logged[-last:])) if logged else None


def character_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    """The characters of ``text`` each of its tokens covers, as ``(start, end)``.

    Leading-space markers count as the space they stand for (`uld.tokenizers.token_texts`).

    >>> from uld.tokenizers import train_tokenizer
    >>> tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="bpe", vocab_size=300)
    >>> character_spans(tok, " the cat")
    [(0, 4), (4, 8)]
    """
    return token_spans(tokenizer, tokenizer(text, add_special_tokens=False)["input_ids"])


def positions_alike(teacher_tokenizer, student_tokenizer, answers: list[str]) -> float:
    """The share of the positions ULD compares whose two tokens cover the same characters.

    ULD aligns the teacher's and the student's answer tokens by position and cuts at the
    shorter; position ``i`` counts as alike when both ``i``-th tokens stand for the same
    characters of the answer (each answer read as ``" " + answer``, as it is trained). A
    leading space is not a character of the answer: ``" Lund"`` and ``"Lund"`` cover alike.
    """
    answers = list(answers)
    if not answers:
        raise ValueError("no answers to compare")
    alike = compared = 0
    for answer in answers:
        teacher = [(max(start, 1), end) for start, end in character_spans(teacher_tokenizer, " " + answer)]
        student = [(max(start, 1), end) for start, end in character_spans(student_tokenizer, " " + answer)]
        for a, b in zip(teacher, student):
            compared += 1
            alike += a == b
    if compared == 0:
        raise ValueError("the answers tokenise to nothing")
    return alike / compared


def pairings(teacher_tokenizer, student_tokenizer, answer: str) -> dict:
    """What each alignment rule pairs in one answer, read as ``" " + answer`` (as it is trained):

    ``teacher``/``student``: the pieces; ``positional``: how many pairs the paper's rule
    compares (the ``i``-th tokens, cut at the shorter answer) and ``positional_alike``: how
    many of them cover the same characters; ``offsets``/``offsets_alike``: the same for
    ``alignment="offsets"`` (tokens that start at the same character);
    ``positional_pairs``/``offsets_pairs``: those pairs as ``(teacher piece, student piece)``.

    >>> from uld.tokenizers import train_tokenizer
    >>> tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="bpe", vocab_size=300)
    >>> found = pairings(tok, tok, "the cat")
    >>> found["positional"], found["positional_alike"], found["offsets"], found["offsets_alike"]
    (2, 2, 2, 2)
    """
    from uld.tokenizers import token_texts

    pieces, spans = {}, {}
    for side, tokenizer in (("teacher", teacher_tokenizer), ("student", student_tokenizer)):
        pieces[side] = token_texts(tokenizer, tokenizer(" " + answer, add_special_tokens=False)["input_ids"])
        spans[side] = character_spans(tokenizer, " " + answer)
    positional = list(zip(spans["teacher"], spans["student"]))
    teacher_at = {start: (start, end) for start, end in spans["teacher"]}
    offsets = [(teacher_at[start], (start, end)) for start, end in spans["student"] if start in teacher_at]
    text = " " + answer
    return {**pieces, "positional": len(positional), "positional_alike": sum(a == b for a, b in positional),
            "offsets": len(offsets), "offsets_alike": sum(a == b for a, b in offsets),
            "positional_pairs": [(text[a[0]:a[1]], text[b[0]:b[1]]) for a, b in positional],
            "offsets_pairs": [(text[a[0]:a[1]], text[b[0]:b[1]]) for a, b in offsets]}


def summarise(values) -> dict:
    """Mean and quartiles of ``values``, rounded for a table.

    >>> summarise([0.1, 0.5, 0.9])
    {'mean': 0.5, 'q25': 0.3, 'median': 0.5, 'q75': 0.7, 'count': 3}
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values to summarise")
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {"mean": round(float(values.mean()), 4), "q25": round(float(q25), 4), "median": round(float(median), 4),
            "q75": round(float(q75), 4), "count": int(values.size)}
