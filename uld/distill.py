"""One distillation run, end to end: teacher answers, training, evaluation, results.

    python -m uld distill --config configs/tiny.yaml --out runs/tiny
    python -m uld distill --config configs/tiny.yaml --set method=seqkd --set epochs=2 --out runs/tiny-seqkd

The config is a YAML file of `DistillConfig` fields; ``--set key=value`` overrides one
(the value is read as YAML, then checked against the field's type). The run folder gets
``teacher_answers.jsonl`` (resumable), ``checkpoints/`` (the Trainer's),
``predictions.jsonl`` and ``metrics.json``, each written whole or not at all; a folder
that already holds ``metrics.json`` is a finished run and is not overwritten unless asked.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["DistillConfig", "run_distillation", "RunFinished"]

_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


class RunFinished(RuntimeError):
    """The output folder already holds a finished run."""


def _check_type(name: str, value, annotation: str) -> None:
    options = [part.strip() for part in str(annotation).split("|")]
    if value is None and "None" in options:
        return
    allowed = tuple(t for option in options for t in _TYPES.get(option, ()))
    wrong_bool = isinstance(value, bool) and bool not in allowed
    if not isinstance(value, allowed) or wrong_bool:
        raise ValueError(f"{name} must be {' or '.join(options)}, got {value!r}")


@dataclass
class DistillConfig:
    """Everything a run depends on; the defaults are the paper's where it has one."""

    task: str = "extractive_qa"
    method: str = "uld"  # raw, sft, seqkd, uld, kl
    teacher: str = "default-teacher"
    student: str = "default-student"
    out: str = "runs/distill"
    distillation_weight: float = 1.5  # lambda
    student_temperature: float = 1.0
    teacher_temperature: float = 1.0
    skip_student_eos: bool = True
    skip_teacher_eos: bool = False
    top_k: int | None = None
    teacher_shots: int = 2
    max_new_tokens: int = 150
    max_length: int = 1024
    train_limit: int | None = None
    train_fraction: float = 1.0
    eval_limit: int | None = None
    epochs: float = 5.0
    learning_rate: float = 1e-4
    weight_decay: float = 0.1
    batch_size: int = 8
    teacher_dtype: str | None = None  # e.g. bfloat16, as the paper ran its teachers
    logging_steps: int = 10
    seed: int = 0

    def __post_init__(self):
        for item in fields(self):
            _check_type(item.name, getattr(self, item.name), item.type)
        from uld.data import TASKS
        from uld.trainer import METHODS

        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        for name in ("epochs", "learning_rate", "batch_size", "max_length", "max_new_tokens", "logging_steps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def load(cls, path=None, overrides: list[str] = (), out: str | None = None) -> "DistillConfig":
        """From a YAML file (optional), then ``key=value`` overrides, then ``out``."""
        import yaml

        values = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of config keys")
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"--set takes key=value, got {item!r}")
            values[key.strip()] = yaml.safe_load(text)
        if out is not None:
            values["out"] = out
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**values)


def run_distillation(config: DistillConfig, echo=print, overwrite: bool = False) -> dict:
    """Run ``config`` and return its metrics (also in ``<out>/metrics.json``).

    Raises `RunFinished` when ``<out>`` already holds a finished run and not ``overwrite``.
    """
    import torch
    from transformers import TrainingArguments, set_seed

    from uld.cache import write_atomically
    from uld.data import TASKS, load_task
    from uld.loss import TokenKLLoss, ULDLoss
    from uld.metrics import exact_match, score
    from uld.models import fit_embeddings, load_model, load_tokenizer
    from uld.teacher import generate_teacher_answers
    from uld.trainer import NEEDS_TEACHER_ANSWERS, DistillationTrainer, PairCollator, build_pairs, generate_answers

    started = time.perf_counter()
    set_seed(config.seed)
    run = Path(config.out)
    if (run / "metrics.json").exists() and not overwrite:
        raise RunFinished(f"{run} already holds a finished run (metrics.json); pass --overwrite to redo it")
    run.mkdir(parents=True, exist_ok=True)
    spec = TASKS[config.task]
    train = load_task(config.task, "train", limit=config.train_limit)
    if config.train_fraction < 1:
        train = train.select(range(max(1, int(len(train) * config.train_fraction))))
    evaluation = load_task(config.task, "eval", limit=config.eval_limit)
    student_tokenizer = load_tokenizer(config.student)
    student = load_model(config.student)
    fit_embeddings(student, student_tokenizer)
    student_is_encoder_decoder = student.config.is_encoder_decoder
    report = {}

    if config.method != "raw":
        teacher = teacher_tokenizer = None
        if config.method in NEEDS_TEACHER_ANSWERS:
            teacher_tokenizer = load_tokenizer(config.teacher)
            teacher = load_model(config.teacher, device=student.device,
                                 dtype=getattr(torch, config.teacher_dtype) if config.teacher_dtype else None)
            fit_embeddings(teacher, teacher_tokenizer)
            echo(f"teacher answers for {len(train)} training questions")
            train = generate_teacher_answers(teacher, teacher_tokenizer, train, kind=spec.kind, run_dir=run,
                                             shots=config.teacher_shots, max_new_tokens=config.max_new_tokens,
                                             seed=config.seed, progress=True)
        pairs, report = build_pairs(train, kind=spec.kind, method=config.method, student_tokenizer=student_tokenizer,
                                    teacher_tokenizer=teacher_tokenizer, student_is_encoder_decoder=student_is_encoder_decoder,
                                    max_length=config.max_length, shots=config.teacher_shots, seed=config.seed)
        echo(f"training on {report['kept']} pairs ({report['too_long']} too long to fit, left out)")
        args = TrainingArguments(output_dir=str(run / "checkpoints"), num_train_epochs=config.epochs,
                                 per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
                                 weight_decay=config.weight_decay, lr_scheduler_type="linear", **_warmup(0.1),
                                 logging_steps=config.logging_steps, save_strategy="epoch", save_total_limit=1, report_to=[],
                                 remove_unused_columns=False, seed=config.seed, use_cpu=not torch.cuda.is_available())
        loss_class = {"uld": ULDLoss, "kl": TokenKLLoss}.get(config.method)
        loss_fn = loss_class(distillation_weight=config.distillation_weight, student_temperature=config.student_temperature,
                             teacher_temperature=config.teacher_temperature, skip_student_eos=config.skip_student_eos,
                             skip_teacher_eos=config.skip_teacher_eos, top_k=config.top_k) if loss_class else None
        trainer = DistillationTrainer(
            model=student, args=args, train_dataset=pairs, teacher=teacher if loss_fn is not None else None,
            loss_fn=loss_fn, student_is_encoder_decoder=student_is_encoder_decoder,
            data_collator=PairCollator(student_tokenizer.pad_token_id,
                                       teacher_tokenizer.pad_token_id if teacher_tokenizer is not None else None))
        resume = any((run / "checkpoints").glob("checkpoint-*"))
        trainer.train(resume_from_checkpoint=True if resume else None)
        report["log_history"] = trainer.state.log_history

    echo(f"evaluating on {len(evaluation)} {spec.eval_split} questions")
    predictions = generate_answers(student, student_tokenizer, evaluation, kind=spec.kind,
                                   max_new_tokens=config.max_new_tokens, max_length=config.max_length)
    references = evaluation["answers"]
    scores = {spec.metric: score(spec.metric, predictions, references)}
    if spec.kind != "summarization":
        scores["em"] = exact_match(predictions, references)
    write_atomically(run / "predictions.jsonl", "".join(
        json.dumps({"id": i, "prediction": p, "references": r}, ensure_ascii=False) + "\n"
        for i, p, r in zip(evaluation["id"], predictions, references)))
    log_history = report.get("log_history", [])
    results = {"scores": scores, "metric": spec.metric, "method": config.method, "task": config.task,
               "teacher": config.teacher if config.method in NEEDS_TEACHER_ANSWERS else None, "student": config.student,
               "n_train": report.get("kept", 0), "left_out_too_long": report.get("too_long", 0),
               "steps": max((entry.get("step", 0) for entry in log_history), default=0), "n_eval": len(evaluation),
               "seconds": round(time.perf_counter() - started, 1), "config": asdict(config), "log_history": log_history}
    write_atomically(run / "metrics.json", json.dumps(results, indent=2))
    echo(f"{config.method}: {', '.join(f'{k} {v:.2f}' for k, v in scores.items())}")
    return results


def _warmup(ratio: float) -> dict:
    """A linear warm-up over ``ratio`` of the steps (transformers 5 takes it as ``warmup_steps``)."""
    from dataclasses import fields as dataclass_fields

    from transformers import TrainingArguments

    names = {f.name for f in dataclass_fields(TrainingArguments)}
    return {"warmup_ratio": ratio} if "warmup_ratio" in names else {"warmup_steps": ratio}
