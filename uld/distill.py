"""One distillation run, end to end: teacher answers, training, evaluation, results.

    python -m uld distill --config configs/tiny.yaml --out runs/tiny
    python -m uld distill --config configs/tiny.yaml --set method=seqkd --set epochs=2 --out runs/tiny-seqkd

The config is a YAML file of `DistillConfig` fields; ``--set key=value`` overrides one
(the value is read as YAML, then checked against the field's type). The run folder gets
``teacher_answers.jsonl`` (resumable), ``checkpoints/`` (the Trainer's, while it trains),
``student/`` (the trained student: weights, config and tokenizer, which `load_model` reads),
``predictions.jsonl`` and ``metrics.json``, each written whole or not at all. Once the
metrics are written the checkpoints go: their optimizer state, twice the weights, only
serves to resume an unfinished run. A folder that already holds a readable
``metrics.json`` is a finished run and is not overwritten unless asked (then its
checkpoints, student, predictions and metrics are removed first and it trains from the
start, reusing the teacher's answers); an unreadable one (a truncated copy, a disk that
filled up) marks an unfinished run, redone with one line naming the file.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

from uld.methods import METHODS, PAPER_DISTILLATION_WEIGHT, needs_teacher_answers, needs_teacher_logits, unread_settings

__all__ = ["DistillConfig", "finished_metrics", "run_distillation", "RunFinished", "unread_settings"]

_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list, tuple),
          "tuple": (list, tuple), "dict": (dict,), "Path": (str, Path)}


class RunFinished(RuntimeError):
    """The output folder already holds a finished run."""


def finished_metrics(folder, echo=print) -> dict | None:
    """The metrics of the finished run in ``folder``, or ``None`` when it is not finished:
    no ``metrics.json``, or one that cannot be read as a run's metrics (then one line
    through ``echo`` names the file; the next run of the folder replaces it).

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> finished_metrics(folder) is None
    True
    >>> _ = (folder / "metrics.json").write_text('{"scores": {"f1')
    >>> finished_metrics(folder, echo=lambda line: print(line.replace(str(folder), "RUN")))
    RUN/metrics.json is unreadable (JSONDecodeError): the run counts as unfinished
    """
    path = Path(folder) / "metrics.json"
    if not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text())
        if not isinstance(metrics, dict) or not {"metric", "scores"} <= set(metrics):
            raise ValueError("not a run's metrics")
        return metrics
    except (ValueError, UnicodeDecodeError) as problem:  # JSONDecodeError is a ValueError
        echo(f"{path} is unreadable ({type(problem).__name__}): the run counts as unfinished")
        return None


def _check_type(name: str, value, annotation: str) -> None:
    """Refuse ``value`` unless it is of a type ``annotation`` names (``"int | None"``,
    ``"list[str]"``, ``"dict"``, ``"Path"``; the items of a list are not checked).

    >>> _check_type("seeds", [0, 1], "list[int] | None")
    >>> _check_type("seeds", 0, "list[int]")
    Traceback (most recent call last):
    ValueError: seeds must be list[int], got 0
    """
    options = [part.strip() for part in str(annotation).split("|")]
    if value is None and "None" in options:
        return
    allowed = tuple(t for option in options for t in _TYPES.get(option.split("[")[0], ()))
    wrong_bool = isinstance(value, bool) and bool not in allowed
    if not isinstance(value, allowed) or wrong_bool:
        raise ValueError(f"{name} must be {' or '.join(options)}, got {value!r}")


@dataclass
class DistillConfig:
    """Everything a run depends on; the defaults are the paper's where it has one.

    Each field, and where it acts (`uld.methods.unread_settings` lists those a method
    never reads):

    The run
        task: the task (`uld.data.TASKS`); ``task_source`` / ``task_datasets_cache``: a local
        copy of a hub task or a ``datasets`` cache holding it (offline). method: raw, sft,
        seqkd, uld or kl (`uld.methods`). teacher, student: kit model names, hub ids or
        folders (`uld.models.load_model`). out: the run's folder. seed: the Trainer's seed
        (the data order; a student starts from its saved weights).
    The loss (uld, kl; `uld.ULDLoss`, `uld.TokenKLLoss`)
        distillation_weight: lambda, the weight of the distance beside the cross-entropy
        (the paper's 1.5; ``ULDLoss`` on its own defaults to 1.0). student_temperature,
        teacher_temperature: the two softmaxes' temperatures. skip_student_eos,
        skip_teacher_eos: leave that side's EOS out of the distance. top_k: compare each
        side's k largest probabilities exactly and the rest by mass (None: exact); with the
        teacher cache it may not exceed ``teacher_cache_top_k``. alignment: "position"
        (the paper's) or "offsets" (live teacher only). hybrid_loss, matched_weight,
        unmatched_weight: the hybrid loss on shared tokens (uld, live, exact).
    The teacher (seqkd, uld, kl)
        teacher_shots: examples in the teacher's prompt (None: the paper's for this task
        and teacher family). max_new_tokens: the longest answer generated, by the teacher
        and at evaluation. teacher_dtype: the teacher's weights' dtype (e.g. bfloat16).
        teacher_cache: train from the teacher's sorted top-k answers kept on disk
        (`uld.teacher_cache`), the teacher unloaded; teacher_cache_top_k: how many
        probabilities it keeps per position. teacher_outputs: the folder for the teacher's
        answers and cache, shared by runs (default: ``out``).
    Training (`transformers.Trainer`)
        train_limit, train_fraction: how many training questions (a count, then a share).
        epochs, learning_rate, weight_decay, batch_size: the Trainer's. max_length: the
        longest prompt and answer, in tokens; longer pairs are left out, never cut.
        logging_steps: how often the Trainer logs. eval_steps: score the validation split
        every this many steps (a learning curve; None: never).
    Evaluation
        eval_limit: how many evaluation questions (None: all).
    """

    task: str = "extractive_qa"
    task_source: str | None = None  # a local copy of a hub task (a save_to_disk folder or data files): offline
    task_datasets_cache: str | None = None  # a datasets cache that holds the hub task
    method: str = "uld"  # raw, sft, seqkd, uld, kl
    teacher: str = "default-teacher"
    student: str = "default-student"
    out: str = "runs/distill"
    distillation_weight: float = PAPER_DISTILLATION_WEIGHT  # lambda, the paper's 1.5
    student_temperature: float = 1.0
    teacher_temperature: float = 1.0
    skip_student_eos: bool = True
    skip_teacher_eos: bool = False
    top_k: int | None = None
    alignment: str = "position"  # uld, kl: position (the paper's) or offsets (tokens starting at one character)
    hybrid_loss: bool = False  # uld: generalized KL on the tokens both vocabularies share, sorted ULD on the rest
    matched_weight: float = 1.0  # hybrid_loss: the weight of the shared tokens' part
    unmatched_weight: float = 1.0  # hybrid_loss: the weight of the sorted part
    teacher_cache: bool = False  # uld, kl: train from the teacher's cached top-k answers, teacher unloaded
    teacher_cache_top_k: int = 256
    teacher_outputs: str | None = None  # folder for teacher answers and cache, shareable by runs; default: out
    teacher_shots: int | None = 2  # None: the paper's shots for this task and teacher family
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
    eval_steps: int | None = None  # score the validation split every this many steps (learning curve)
    seed: int = 0  # the Trainer's seed: data order (a student starts from its saved weights)

    def __post_init__(self):
        for item in fields(self):
            _check_type(item.name, getattr(self, item.name), item.type)
        from uld.data import TASKS

        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        if self.teacher_shots is None:
            self.teacher_shots = TASKS[self.task].paper_shots(self.teacher)
        if self.teacher_shots < 0:
            raise ValueError(f"teacher_shots must be >= 0, got {self.teacher_shots}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.teacher_cache and not needs_teacher_logits(self.method):
            raise ValueError(f"teacher_cache applies to the uld and kl methods only, not {self.method!r}")
        from uld.alignment import ALIGNMENTS

        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {self.alignment!r}")
        if self.hybrid_loss and (self.method != "uld" or self.teacher_cache or self.top_k is not None):
            raise ValueError("hybrid_loss applies to the uld method with the live teacher in the exact mode "
                             "(teacher_cache: false, top_k: null)")
        if self.teacher_cache and self.top_k is not None and self.top_k > self.teacher_cache_top_k:
            raise ValueError(f"top_k {self.top_k} exceeds teacher_cache_top_k {self.teacher_cache_top_k}: the cache "
                             f"keeps that many probabilities per position; raise teacher_cache_top_k instead")
        if self.alignment == "offsets" and self.teacher_cache:
            raise ValueError("alignment offsets needs the live teacher (its cache keeps no character offsets): "
                             "set teacher_cache: false")
        for name in ("epochs", "learning_rate", "batch_size", "max_length", "max_new_tokens", "logging_steps",
                     "teacher_cache_top_k", "eval_steps", "student_temperature", "teacher_temperature", "top_k",
                     "train_limit", "eval_limit"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("distillation_weight", "weight_decay", "matched_weight", "unmatched_weight"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def load(cls, path=None, overrides: list[str] = (), out: str | None = None) -> "DistillConfig":
        """From a YAML file (optional), then ``key=value`` overrides, then ``out``."""
        from uld.yaml_files import parse_value, read_mapping

        if path is None and not overrides:
            raise ValueError("nothing to run: give a config file or at least one key=value setting")
        values = read_mapping(path, "config keys") if path else {}
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"--set takes key=value, got {item!r}")
            values[key.strip()] = parse_value(text, key.strip())
        if out is not None:
            values["out"] = out
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**values)


def run_distillation(config: DistillConfig, echo=print, overwrite: bool = False, progress: bool = True) -> dict:
    """Run ``config`` and return its metrics (also in ``<out>/metrics.json``), in five stages:
    load the data and the student, prepare the teacher (its answers, the training pairs, its
    cache), train, evaluate, record (the trained student is kept in ``<out>/student``, the
    Trainer's checkpoints are removed).

    ``progress=False`` hides the progress bars (teacher answers, cache, Trainer, loading).

    Raises `RunFinished` when ``<out>`` already holds a finished run and not ``overwrite``.
    """
    started = time.perf_counter()
    run = _start(config, echo, overwrite, progress)
    data = _load_data(config)
    student = _load_student(config)
    run.mkdir(parents=True, exist_ok=True)  # only now: a missing task or model leaves nothing behind
    report = {}
    if config.method != "raw":
        teacher = _prepare_teacher(config, data, student, run, echo, progress)
        report = {**teacher.report, "log_history": _train(config, data, student, teacher, run, progress)}
        _save_student(config, run, student)
    predictions, scores = _evaluate(config, data, student, echo)
    results = _record(config, data, run, predictions, scores, report, started, echo)
    if _is_main_process():
        shutil.rmtree(run / CHECKPOINTS, ignore_errors=True)  # finished: nothing left to resume
    return results


class _Data(NamedTuple):
    spec: object  # the task's `uld.data.TaskSpec`
    train: object  # `datasets.Dataset` of training questions
    evaluation: object  # `datasets.Dataset` the student is scored on
    where: dict  # where the task's data comes from (`load_task`'s source and datasets_cache)


class _Student(NamedTuple):
    model: object
    tokenizer: object
    is_encoder_decoder: bool


class _PreparedTeacher(NamedTuple):
    model: "_LazyTeacher"  # loaded only if something still needs it
    tokenizer: object  # None for sft, which never reads the teacher
    pairs: object  # the training pairs (`uld.trainer.build_pairs`)
    cache: object  # the `TeacherCache` the loss reads, or None for the live teacher (or no loss)
    report: dict  # kept and left-out pairs, the cache's bytes per token


def _start(config: DistillConfig, echo, overwrite: bool, progress: bool) -> Path:
    """Seed everything, hide the bars if asked, refuse a finished run; the run's folder."""
    from transformers import set_seed

    if not progress:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    set_seed(config.seed)
    run = Path(config.out)
    if finished_metrics(run, echo) is not None:
        if not overwrite:
            raise RunFinished(f"{run} already holds a finished run (metrics.json); pass --overwrite to redo it")
        _remove_trained(run)
    return run


CHECKPOINTS = "checkpoints"
TRAINED = ("metrics.json", "predictions.jsonl", "student", CHECKPOINTS)  # what a redo starts without


def _remove_trained(run: Path) -> None:
    """Remove what training and evaluation wrote in ``run`` (`TRAINED`), so that a redone run
    trains from the start instead of resuming from the last checkpoint; the teacher's answers
    and cache are kept (the cache is keyed by what it was built from)."""
    for name in TRAINED:
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _is_main_process() -> bool:
    """False on the other ranks of a distributed run (they train, the first one writes)."""
    import torch.distributed as distributed

    return not (distributed.is_available() and distributed.is_initialized()) or distributed.get_rank() == 0


def _save_student(config: DistillConfig, run: Path, student: _Student) -> None:
    """The trained student as ``run/student``, a folder `uld.models.load_model` reads (its
    ``uld.json`` says it is a student, so `uld.evaluation` gives it the student's prompt)."""
    from uld.model_files import save_model_folder

    if _is_main_process():
        save_model_folder(run / "student", student.model, student.tokenizer,
                          {"role": "student", "base": config.student, "method": config.method})


def _load_data(config: DistillConfig) -> _Data:
    """The training questions (``train_limit``, then ``train_fraction``) and the evaluation ones."""
    from uld.data import TASKS, load_task

    where = {"source": config.task_source, "datasets_cache": config.task_datasets_cache}
    train = load_task(config.task, "train", limit=config.train_limit, **where)
    if config.train_fraction < 1:
        train = train.select(range(max(1, int(len(train) * config.train_fraction))))
    evaluation = load_task(config.task, "eval", limit=config.eval_limit, **where)
    return _Data(TASKS[config.task], train, evaluation, where)


def _load_student(config: DistillConfig) -> _Student:
    from uld.models import default_device, fit_embeddings, load_model, load_tokenizer

    tokenizer = load_tokenizer(config.student)
    model = load_model(config.student, device=default_device())
    fit_embeddings(model, tokenizer)
    return _Student(model, tokenizer, model.config.is_encoder_decoder)


def _prepare_teacher(config: DistillConfig, data: _Data, student: _Student, run: Path, echo,
                     progress: bool) -> _PreparedTeacher:
    """The teacher's answers (generated once, resumably), the training pairs, and the teacher
    cache when the config asks for one (after which the teacher model is no longer held)."""
    from uld.models import default_device, load_tokenizer
    from uld.teacher_cache import build_teacher_cache, pairs_fingerprint
    from uld.trainer import build_pairs

    folder = Path(config.teacher_outputs) if config.teacher_outputs else run
    teacher = _LazyTeacher(config, default_device())
    tokenizer = load_tokenizer(config.teacher) if needs_teacher_answers(config.method) else None
    train = data.train
    if needs_teacher_answers(config.method):
        train = _with_teacher_answers(train, teacher, tokenizer, config, data.spec, folder, echo, progress)
    pairs, report = build_pairs(train, kind=data.spec.kind, method=config.method, student_tokenizer=student.tokenizer,
                                teacher_tokenizer=tokenizer, student_is_encoder_decoder=student.is_encoder_decoder,
                                max_length=config.max_length, shots=config.teacher_shots, seed=config.seed,
                                offsets=config.alignment == "offsets" and needs_teacher_logits(config.method))
    echo(f"training on {report['kept']} pairs ({report['too_long']} too long to fit, left out)")
    cache = None
    if config.teacher_cache:
        token_ids = config.method == "kl"  # KL needs to know each probability's token; ULD does not
        name = (f"k{config.teacher_cache_top_k}-t{config.teacher_temperature:g}-{pairs_fingerprint(pairs)[:12]}"
                + ("-ids" if token_ids else ""))
        cache = build_teacher_cache(teacher.get, pairs, folder / "teacher_cache" / name,
                                    top_k=config.teacher_cache_top_k, token_ids=token_ids,
                                    temperature=config.teacher_temperature, pad_token_id=tokenizer.pad_token_id,
                                    progress=progress, echo=echo)
        report["teacher_cache_bytes_per_token"] = cache.bytes_per_token
        teacher.release()
    return _PreparedTeacher(teacher, tokenizer, pairs, cache, report)


def _train(config: DistillConfig, data: _Data, student: _Student, teacher: _PreparedTeacher, run: Path,
           progress: bool) -> list:
    """Train the student (resuming from the run's last checkpoint); the Trainer's log history."""
    import torch
    from transformers import TrainingArguments

    from uld.data import load_task
    from uld.loss import TokenKLLoss, ULDLoss
    from uld.evaluation import HeldOutScore
    from uld.trainer import DistillationTrainer, PairCollator, build_pairs

    evaluating = config.eval_steps is not None
    args = TrainingArguments(output_dir=str(run / CHECKPOINTS), num_train_epochs=config.epochs,
                             per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
                             learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                             lr_scheduler_type="linear", **_warmup(0.1), logging_steps=config.logging_steps,
                             save_strategy="epoch", save_total_limit=1, report_to=[], remove_unused_columns=False,
                             seed=config.seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=not progress,
                             **({"eval_strategy": "steps", "eval_steps": config.eval_steps} if evaluating else {}))
    loss_class = {"uld": ULDLoss, "kl": TokenKLLoss}.get(METHODS[config.method].loss)
    loss_fn = (loss_class(distillation_weight=config.distillation_weight, student_temperature=config.student_temperature,
                          teacher_temperature=config.teacher_temperature, skip_student_eos=config.skip_student_eos,
                          skip_teacher_eos=config.skip_teacher_eos, top_k=config.top_k, alignment=config.alignment,
                          **_hybrid(config, student.tokenizer, teacher.tokenizer))
               if loss_class else None)
    held_out = monitored = None
    if evaluating:  # on the validation split where the task has one: the eval split stays unseen
        has_validation = data.spec.embedded or "validation" in data.spec.hub_splits
        monitored = load_task(config.task, "validation" if has_validation else "eval", limit=config.eval_limit,
                              **data.where)
        held_out, _ = build_pairs(monitored, kind=data.spec.kind, method="sft", student_tokenizer=student.tokenizer,
                                  student_is_encoder_decoder=student.is_encoder_decoder, max_length=config.max_length)
    trainer = DistillationTrainer(
        model=student.model, args=args, train_dataset=teacher.pairs, eval_dataset=held_out,
        teacher=teacher.model.get() if loss_fn is not None and teacher.cache is None else None,
        loss_fn=loss_fn, student_is_encoder_decoder=student.is_encoder_decoder,
        held_out_score=HeldOutScore(monitored, data.spec.kind, data.spec.metric, student.tokenizer,
                                    config.max_new_tokens, config.max_length) if evaluating else None,
        data_collator=PairCollator(student.tokenizer.pad_token_id,
                                   teacher.tokenizer.pad_token_id if teacher.tokenizer is not None else None,
                                   teacher_cache=teacher.cache))
    teacher.model.release()  # the trainer holds it where it needs it
    if not progress:  # without bars the Trainer prints every log line instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    resume = any((run / CHECKPOINTS).glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    return trainer.state.log_history


def _evaluate(config: DistillConfig, data: _Data, student: _Student, echo) -> tuple[list, dict]:
    """The student's greedy answers to the evaluation questions, and their scores."""
    from uld.generation import answer_questions
    from uld.metrics import score_answers

    echo(f"evaluating on {len(data.evaluation)} {data.spec.eval_split} questions")
    predictions = answer_questions(student.model, student.tokenizer, data.evaluation, kind=data.spec.kind,
                                   max_new_tokens=config.max_new_tokens, max_length=config.max_length)
    return predictions, score_answers(config.task, predictions, data.evaluation["answers"])


def _record(config: DistillConfig, data: _Data, run: Path, predictions: list, scores: dict, report: dict,
            started: float, echo) -> dict:
    """``predictions.jsonl`` and ``metrics.json``, each written whole; the metrics."""
    from uld.storage import write_atomically
    from uld.evaluation import write_predictions

    write_predictions(run, data.evaluation, predictions)
    log_history = report.get("log_history", [])
    results = {"scores": scores, "metric": data.spec.metric, "method": config.method, "task": config.task,
               "teacher": config.teacher if needs_teacher_answers(config.method) else None, "student": config.student,
               "n_train": report.get("kept", 0),
               "teacher_cache_bytes_per_token": report.get("teacher_cache_bytes_per_token"),
               "left_out_too_long": report.get("too_long", 0),
               "steps": max((entry.get("step", 0) for entry in log_history), default=0),
               "n_eval": len(data.evaluation), "seconds": round(time.perf_counter() - started, 1),
               "config": asdict(config), "log_history": log_history}
    write_atomically(run / "metrics.json", json.dumps(results, indent=2))
    echo(f"{config.method}: {', '.join(f'{k} {v:.2f}' for k, v in scores.items())}")
    return results


def _hybrid(config: DistillConfig, student_tokenizer, teacher_tokenizer) -> dict:
    """The hybrid loss's settings for `ULDLoss`, the shared vocabulary computed here."""
    if not config.hybrid_loss:
        return {}
    from uld.alignment import shared_vocabulary

    return {"shared_vocabulary": shared_vocabulary(student_tokenizer, teacher_tokenizer),
            "matched_weight": config.matched_weight, "unmatched_weight": config.unmatched_weight}


class _LazyTeacher:
    """The teacher model, loaded on first use only (a run with finished teacher answers
    and cache never loads it) and released once the trainer no longer needs our copy."""

    def __init__(self, config: DistillConfig, device):
        self.config, self.device, self.model = config, device, None

    def get(self):
        if self.model is None:
            import torch

            from uld.models import fit_embeddings, load_model, load_tokenizer

            dtype = getattr(torch, self.config.teacher_dtype) if self.config.teacher_dtype else None
            self.model = load_model(self.config.teacher, device=self.device, dtype=dtype)
            fit_embeddings(self.model, load_tokenizer(self.config.teacher))
        return self.model

    def release(self) -> None:
        self.model = None


def _with_teacher_answers(train, teacher: _LazyTeacher, tokenizer, config: DistillConfig, spec, folder: Path, echo,
                          progress: bool):
    """``train`` with its ``teacher_answer`` column, generating (resumably) what is missing."""
    from uld.teacher_answers import (MissingAnswers, answer_settings, generate_teacher_answers, load_teacher_answers,
                                     record_settings)

    record_settings(folder, answer_settings(config.teacher, shots=config.teacher_shots, seed=config.seed,
                                            max_new_tokens=config.max_new_tokens, dtype=config.teacher_dtype))
    try:
        return load_teacher_answers(folder, train)
    except MissingAnswers:
        echo(f"teacher answers for {len(train)} training questions")
        return generate_teacher_answers(teacher.get(), tokenizer, train, kind=spec.kind, run_dir=folder,
                                        shots=config.teacher_shots, max_new_tokens=config.max_new_tokens,
                                        seed=config.seed, progress=progress)


def _warmup(ratio: float) -> dict:
    """A linear warm-up over ``ratio`` of the steps (transformers 5 takes it as ``warmup_steps``)."""
    from dataclasses import fields as dataclass_fields

    from transformers import TrainingArguments

    names = {f.name for f in dataclass_fields(TrainingArguments)}
    return {"warmup_ratio": ratio} if "warmup_ratio" in names else {"warmup_steps": ratio}
