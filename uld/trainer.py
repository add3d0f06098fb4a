"""Distillation on `transformers.Trainer`: paired batches, a frozen teacher, the ULD loss.

Methods (the paper's and its baselines):

=======  ==================================================  =====================
method   what the student learns from                         loss
=======  ==================================================  =====================
raw      nothing (the student as it is)                       -
sft      gold answers                                         cross-entropy
seqkd    the teacher's answers (the paper's lambda = 0)       cross-entropy
uld      the teacher's answers and its logits                 CE + lambda * ULD
kl       the same, when both share one tokenizer              CE + lambda * token KL
=======  ==================================================  =====================

Each training example carries two tokenisations of the same answer: the student's (its
zero-shot plain prompt, the answer, EOS) and the teacher's (its few-shot prompt and the
same answer, no EOS: the teacher's text carries none). The collator pads each side with
its own pad token; the trainer runs the frozen teacher without gradients, in its own
dtype and device, and `uld.ULDLoss` aligns the two answers. Progress bars, logging,
checkpoints and resume, seeds and distributed training come from the Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Trainer

from uld.data import collate, encode_decoder, encode_encoder_decoder, side_fields
from uld.diagnostics import mean_answer_entropy
from uld.loss import SortedTeacher, ULDLoss
from uld.methods import METHODS
from uld.prompts import shots_for_row, student_prompt, teacher_prompt
from uld.teacher_cache import TeacherCache, answer_logits

__all__ = ["build_pairs", "PairCollator", "DistillationTrainer"]


def build_pairs(rows, *, kind: str, method: str, student_tokenizer, teacher_tokenizer=None,
                student_is_encoder_decoder: bool = False, max_length: int = 512, max_target_length: int = 128,
                shots: int = 0, shot_pool=None, seed: int = 0, offsets: bool = False):
    """Tokenise rows for ``method``; returns ``(Dataset, report)``.

    ``sft`` targets the gold answer, the others the ``teacher_answer`` column; ``uld``
    and ``kl`` also tokenise the teacher side (``kl`` only with one shared tokenizer). Rows that cannot fit on either side are
    counted in the report, never cut mid-answer. ``offsets=True`` (``uld``, ``kl``) adds
    ``student_offsets`` and ``teacher_offsets``: per label, the ``(start, end)`` characters of
    the answer text its token covers (`uld.alignment.token_spans`), for
    ``ULDLoss(alignment="offsets")``.
    """
    from datasets import Dataset

    spec = METHODS.get(method)
    if spec is None or not spec.trains:
        trained = ", ".join(name for name, row in METHODS.items() if row.trains)
        raise ValueError(f"method {method!r} does not train; choose from {trained}")
    if spec.teacher_logits and teacher_tokenizer is None:
        raise ValueError(f"the {method} method needs the teacher's tokenizer")
    if offsets and (not spec.teacher_logits or student_is_encoder_decoder):
        raise ValueError("character offsets pair a decoder student with the teacher: methods uld and kl only")
    if method == "kl" and student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise ValueError("the kl method needs one tokenizer shared by teacher and student; these differ "
                         "(that is what uld is for)")
    pool = list(shot_pool if shot_pool is not None else rows) if shots else []
    examples, report = [], {"kept": 0, "too_long": 0}
    for index, row in enumerate(rows):
        answer = row["answers"][0] if method == "sft" else row["teacher_answer"]
        render = (lambda text, row=row: student_prompt(kind, text, row["question"]))
        if student_is_encoder_decoder:
            student = encode_encoder_decoder(student_tokenizer, render, row["context"], answer, max_length,
                                             max_target_length)
        else:
            student = encode_decoder(student_tokenizer, render, row["context"], answer, max_length)
        teacher = None
        if spec.teacher_logits and student is not None:
            chosen = shots_for_row(pool, shots, seed, index, row["id"])
            render_teacher = (lambda text, row=row: teacher_prompt(teacher_tokenizer, kind, text, row["question"], chosen))
            teacher = encode_decoder(teacher_tokenizer, render_teacher, row["context"], answer, max_length)
            if teacher is not None:  # the teacher's text carries no EOS
                for key in ("input_ids", "attention_mask", "labels"):
                    teacher[key] = teacher[key][:-1]
        if student is None or (spec.teacher_logits and teacher is None):
            report["too_long"] += 1
            continue
        report["kept"] += 1
        example = {"example": len(examples), **{f"student_{k}": v for k, v in student.items() if k != "truncated"}}
        if teacher is not None:
            example.update({f"teacher_{k}": v for k, v in teacher.items() if k != "truncated"})
        if offsets:
            example["student_offsets"] = label_offsets(student_tokenizer, student["labels"], with_eos=True)
            example["teacher_offsets"] = label_offsets(teacher_tokenizer, teacher["labels"], with_eos=False)
        examples.append(example)
    return Dataset.from_list(examples), report


def label_offsets(tokenizer, labels: list[int], with_eos: bool, ignore_index: int = -100) -> list[list[int]]:
    """``[start, end]`` characters of the answer text for every label (``[0, 0]`` off the
    answer); the answer's last label is its EOS, the empty span at the end, when ``with_eos``.

    >>> from uld.tokenizers import train_tokenizer
    >>> tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="bpe", vocab_size=300)
    >>> ids = tok(" the cat", add_special_tokens=False)["input_ids"]
    >>> label_offsets(tok, [-100] + ids + [0], with_eos=True)
    [[0, 0], [0, 4], [4, 8], [8, 8]]
    """
    from uld.alignment import token_spans

    answer = [label for label in labels if label != ignore_index]
    spans = token_spans(tokenizer, answer[:-1] if with_eos else answer)
    if with_eos:
        end = spans[-1][1] if spans else 0
        spans.append((end, end))
    spans = iter(spans)
    return [[0, 0] if label == ignore_index else list(next(spans)) for label in labels]


@dataclass
class PairCollator:
    """Pads the student side (as ``input_ids``, ``attention_mask``, ``labels``) and the
    teacher side (as ``teacher_*``), each with its own pad token.

    With a ``teacher_cache`` (`uld.teacher_cache.TeacherCache` built from the same pairs)
    the teacher side is the cached sorted answers instead: ``teacher_head``,
    ``teacher_tail``, ``teacher_sizes`` and ``teacher_rounding``, looked up by each
    pair's ``example`` number.
    """

    student_pad_token_id: int
    teacher_pad_token_id: int | None = None
    teacher_cache: "TeacherCache | None" = None

    def __call__(self, features: list[dict]) -> dict:
        batch = collate([side_fields(f, "student") for f in features], self.student_pad_token_id)
        if self.teacher_cache is not None:
            cached = self.teacher_cache.rows([f["example"] for f in features])
            batch.update({f"teacher_{k}": v for k, v in cached._asdict().items()})
        elif "teacher_input_ids" in features[0]:
            teacher = collate([side_fields(f, "teacher") for f in features], self.teacher_pad_token_id)
            batch.update({f"teacher_{k}": v for k, v in teacher.items()})
        return batch


class DistillationTrainer(Trainer):
    """`transformers.Trainer` whose loss is `ULDLoss` against a frozen teacher.

    With ``teacher=None`` it is plain cross-entropy training (``sft``, ``seqkd``). Logs
    ``crossentropy``, ``distillation`` and ``entropy`` (the student's mean entropy in nats
    on the answer tokens it is trained on: `uld.diagnostics`) beside ``loss``.
    ``held_out_score`` (a `uld.evaluation.HeldOutScore`, or any callable model -> number with
    a ``metric`` name) is measured at each evaluation.
    """

    def __init__(self, *args, teacher=None, loss_fn: ULDLoss | None = None, student_is_encoder_decoder=False,
                 teacher_is_encoder_decoder=False, held_out_score=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.held_out_score = held_out_score
        cached = getattr(self.data_collator, "teacher_cache", None) is not None
        if teacher is None and not cached and loss_fn is not None and loss_fn.distillation_weight != 0:
            raise ValueError("a distillation loss needs a teacher: pass teacher=, a PairCollator with a "
                             "teacher_cache, or use method sft/seqkd")
        if cached and teacher is not None:
            raise ValueError("pass either a teacher or a collator with a teacher_cache, not both")
        self.teacher, self.from_cache = teacher, cached
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
            if loss_fn is None:
                raise ValueError("a teacher needs a loss_fn (uld.ULDLoss) to be distilled from")
        self.loss_fn = loss_fn
        self.encoder_decoder = (student_is_encoder_decoder, teacher_is_encoder_decoder)
        self._components: dict[str, list[float]] = {"crossentropy": [], "distillation": [], "entropy": []}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop("example", None)
        student_offsets = inputs.pop("offsets", None)
        teacher_inputs = side_fields(inputs, "teacher")
        for key in teacher_inputs:
            del inputs[f"teacher_{key}"]
        if not teacher_inputs:  # sft, seqkd, held-out gold answers: the model's own cross-entropy
            outputs = model(**inputs)
            self._components["crossentropy"].append(outputs.loss.item())
            self._log_entropy(outputs.logits, inputs["labels"])
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        # The student's cross-entropy comes from ULDLoss, so a decoder gets no labels here
        # (the model would compute a second, full-vocabulary cross-entropy).
        student_is_encoder_decoder = self.encoder_decoder[0]
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        **({"labels": inputs["labels"]} if student_is_encoder_decoder else {}))
        if self.from_cache:  # the collator gave the cached sorted answers, not the teacher's inputs
            result = self.loss_fn.from_sorted_teacher(outputs.logits, inputs["labels"], SortedTeacher(**teacher_inputs),
                                                      student_is_encoder_decoder)
        else:
            device = next(self.teacher.parameters()).device
            with torch.no_grad():
                teacher_logits, teacher_labels, *teacher_offsets = answer_logits(
                    self.teacher, teacher_inputs["input_ids"].to(device), teacher_inputs["attention_mask"].to(device),
                    teacher_inputs["labels"].to(device), *([teacher_inputs["offsets"].to(device)]
                                                           if "offsets" in teacher_inputs else []))
            here = outputs.logits.device
            offsets = {"student_offsets": student_offsets.to(here), "teacher_offsets": teacher_offsets[0].to(here)} \
                if student_offsets is not None else {}
            result = self.loss_fn(outputs.logits, teacher_logits.to(here), inputs["labels"], teacher_labels.to(here),
                                  *self.encoder_decoder, **offsets)
        self._components["crossentropy"].append(result.crossentropy.item())
        self._components["distillation"].append(result.distillation.item())
        self._log_entropy(outputs.logits, inputs["labels"])
        return (result.loss, outputs) if return_outputs else result.loss

    def _log_entropy(self, logits, labels) -> None:
        if self.model.training and bool((labels != -100).any()):  # held-out evaluation has its own metrics
            self._components["entropy"].append(mean_answer_entropy(logits.detach(), labels, self.encoder_decoder[0]).item())

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Resume weights through ``from_pretrained``, which maps renamed keys.

        The Trainer loads a checkpoint's state dict as it is, without strictness, so a model
        whose saved names differ from its module names (GPT-NeoX saves ``embed_out``, its
        module is ``lm_head`` in transformers 5) would resume with a fresh output layer.
        """
        model = self.model if model is None else model
        if self.is_fsdp_enabled or not hasattr(model, "from_pretrained"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(resume_from_checkpoint, config=model.config)
        model.load_state_dict(loaded.state_dict(), strict=True)

    def evaluate(self, *args, **kwargs):
        """The Trainer's held-out loss, plus the task metric of greedy answers when a
        ``held_out_score`` is given (logged as ``eval_<metric>``: the learning curve)."""
        metrics = super().evaluate(*args, **kwargs)
        if self.held_out_score is not None:
            value = self.held_out_score(self.model)
            key = f"eval_{self.held_out_score.metric}"
            metrics[key] = value
            self.log({key: value})
        return metrics

    def log(self, logs, *args, **kwargs):
        for name, values in self._components.items():
            if values and "loss" in logs:
                logs[name] = round(sum(values) / len(values), 6)
                values.clear()
        super().log(logs, *args, **kwargs)
