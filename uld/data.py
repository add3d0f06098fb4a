"""Tasks: the paper's five from the hub, three embedded offline ones, and their tokenisation.

Every task loads as a `datasets.Dataset` with the columns ``id``, ``context``,
``question`` and ``answers`` (a list of reference strings); `TASKS` records each task's
kind and metric.

==================  ==============  =========  ==========================================
task                kind            metric     source
==================  ==============  =========  ==========================================
squad               extractive_qa   f1         hub ``rajpurkar/squad`` (eval: validation)
qed                 extractive_qa   f1         hub ``google-research-datasets/qed`` (eval: validation)
fairytaleqa         generative_qa   bertscore  hub ``GEM/FairytaleQA`` (eval: test)
pubmedqa            generative_qa   bertscore  hub ``qiaojin/PubMedQA`` (eval: 500 labeled)
dialogsum           summarization   rougeLsum  hub ``knkarthick/dialogsum`` (eval: validation)
extractive_qa       extractive_qa   f1         embedded, ``data/tasks`` (`uld.embedded`)
generative_qa       generative_qa   rougeLsum  embedded (BERTScore needs a hub model)
dialogue_summary    summarization   rougeLsum  embedded
==================  ==============  =========  ==========================================

Offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``), a hub task that is not in the
`datasets` cache fails at once with `TaskUnavailable`; ``source=`` takes a local copy
(a folder written by ``save_to_disk``, or json/jsonl/parquet/csv files) instead.

>>> dataset = load_task("extractive_qa", "validation", limit=2)
>>> dataset.column_names, len(dataset)
(['id', 'context', 'question', 'answers'], 2)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from uld.storage import hub_offline
from uld.prompts import KINDS

__all__ = ["TASKS", "TaskSpec", "TaskUnavailable", "load_task", "DATA_DIR", "ensure_pad_token", "encode_decoder",
           "encode_encoder_decoder", "tokenize_dataset", "collate"]

DATA_DIR = Path(os.environ.get("ULD_DATA") or Path(__file__).resolve().parents[1] / "data" / "tasks")
COLUMNS = ["id", "context", "question", "answers"]
SPLITS = ("train", "validation", "test")


class TaskUnavailable(RuntimeError):
    """A task that needs the hub (or a local copy) cannot be loaded here."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # one of uld.prompts.KINDS
    metric: str  # "f1", "bertscore" or "rougeLsum"
    eval_split: str  # the split the paper evaluates on
    hub_id: str | None = None
    hub_splits: dict = field(default_factory=dict)  # our split -> (hub config, hub split expression)
    convert: Callable[[dict, int], dict] | None = None  # hub row, index -> our columns
    teacher_shots: dict = field(default_factory=dict)  # teacher family -> shots (the paper's)

    @property
    def embedded(self) -> bool:
        return self.hub_id is None

    def paper_shots(self, teacher: str) -> int:
        """The shots the paper gave a teacher of this family (by name) on this task; 0 otherwise.

        >>> TASKS["squad"].paper_shots("mistralai/Mistral-7B-Instruct-v0.2")
        3
        """
        name = teacher.lower()
        family = "mistral" if "mistral" in name else "llama" if "llama" in name else None
        return self.teacher_shots.get(family, 0)


def _squad(row, index):
    return dict(id=str(row["id"]), context=row["context"], question=row["question"], answers=list(row["answers"]["text"]))


def _qed(row, index):
    return dict(id=str(row.get("example_id", index)), context=row["paragraph_text"], question=row["question"],
                answers=_strings(row["original_nq_answers"]))


def _fairytaleqa(row, index):
    return dict(id=str(row.get("gem_id") or row.get("id") or index), context=row["content"], question=row["question"],
                answers=[row["answer"]] + [a for a in row.get("references", []) or [] if a != row["answer"]])


def _pubmedqa(row, index):
    contexts = row["context"]["contexts"] if isinstance(row["context"], dict) else row["context"]
    return dict(id=str(row.get("pubid", index)), context=" ".join(contexts), question=row["question"],
                answers=[row["long_answer"]])


def _dialogsum(row, index):
    return dict(id=str(row.get("id", index)), context=row["dialogue"], question="Summarize the dialogue.",
                answers=[row["summary"]])


def _strings(value) -> list[str]:
    """Answer strings from nested lists/dicts (QED nests ``{"string": ...}`` in lists)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return _strings(value["string"]) if "string" in value else [s for v in value.values() for s in _strings(v)]
    found = [s for item in value for s in _strings(item)]
    return list(dict.fromkeys(found))


TASKS = {spec.name: spec for spec in (
    TaskSpec("squad", "extractive_qa", "f1", "validation", "rajpurkar/squad",
             {"train": (None, "train"), "validation": (None, "validation")}, _squad, {"llama": 1, "mistral": 3}),
    TaskSpec("qed", "extractive_qa", "f1", "validation", "google-research-datasets/qed",
             {"train": (None, "train"), "validation": (None, "validation")}, _qed, {"llama": 5, "mistral": 5}),
    TaskSpec("fairytaleqa", "generative_qa", "bertscore", "test", "GEM/FairytaleQA",
             {"train": (None, "train"), "validation": (None, "validation"), "test": (None, "test")}, _fairytaleqa,
             {"llama": 2, "mistral": 4}),
    TaskSpec("pubmedqa", "generative_qa", "bertscore", "test", "qiaojin/PubMedQA",
             {"train": ("pqa_artificial", "train"), "test": ("pqa_labeled", "train[500:]")}, _pubmedqa,
             {"llama": 3, "mistral": 3}),
    TaskSpec("dialogsum", "summarization", "rougeLsum", "validation", "knkarthick/dialogsum",
             {"train": (None, "train"), "validation": (None, "validation"), "test": (None, "test")}, _dialogsum,
             {"llama": 3, "mistral": 2}),
    TaskSpec("extractive_qa", "extractive_qa", "f1", "test"),
    TaskSpec("generative_qa", "generative_qa", "rougeLsum", "test"),
    TaskSpec("dialogue_summary", "summarization", "rougeLsum", "test"),
)}
assert all(spec.kind in KINDS for spec in TASKS.values())


def load_task(name: str, split: str, limit: int | None = None, source: str | Path | None = None,
              datasets_cache: str | Path | None = None):
    """One split of a task as a `datasets.Dataset` with columns ``id, context, question, answers``.

    Args:
        name: a key of `TASKS`.
        split: ``train``, ``validation``, ``test``, or ``eval`` for the paper's evaluation split.
        limit: keep the first ``limit`` rows.
        source: a local copy of a hub task (``save_to_disk`` folder or data files).
        datasets_cache: a folder of the `datasets` library's cache holding the hub task (read
            offline too); not the kit's own folder (`uld.storage.cache_dir`).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    spec = TASKS[name]
    split = spec.eval_split if split == "eval" else split
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit}")
    if source is not None:
        dataset = _from_local(spec, split, Path(source))
    elif spec.embedded:
        dataset = _from_embedded(spec, split)
    else:
        dataset = _from_hub(spec, split, datasets_cache)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    dataset.info.description = json.dumps({"task": name, "kind": spec.kind, "metric": spec.metric, "split": split})
    return dataset


def _from_embedded(spec: TaskSpec, split: str):
    from datasets import Dataset

    path = DATA_DIR / spec.name / f"{split}.jsonl"
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {spec.name}; choose from {', '.join(SPLITS)} or eval")
    if not path.exists():
        raise TaskUnavailable(f"{path} is missing: regenerate the embedded tasks with `python -m uld data`")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return Dataset.from_list([{column: row[column] for column in COLUMNS} for row in rows])


def _from_hub(spec: TaskSpec, split: str, datasets_cache=None):
    import datasets

    if split not in spec.hub_splits:
        raise ValueError(f"{spec.name} has no {split!r} split here; choose from {', '.join(spec.hub_splits)} or eval")
    config, expression = spec.hub_splits[split]
    try:
        raw = datasets.load_dataset(spec.hub_id, config, split=expression,
                                    cache_dir=str(datasets_cache) if datasets_cache is not None else None)
    except Exception as failure:
        reason = "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and it is not in the datasets cache" \
            if hub_offline("HF_DATASETS_OFFLINE") else f"{type(failure).__name__}: {str(failure).splitlines()[0] if str(failure) else ''}"
        raise TaskUnavailable(
            f"{spec.name} needs the Hugging Face hub ({spec.hub_id}): {reason}. "
            f"Give a local copy instead (a run's config: task_source: path/to/copy, or --set "
            f"task_source=path/to/copy; in Python: load_task({spec.name!r}, {split!r}, source='path/to/copy')) "
            f"or a datasets cache that holds it (task_datasets_cache, datasets_cache=)"
        ) from None
    return _converted(spec, raw)


def _from_local(spec: TaskSpec, split: str, source: Path):
    import datasets

    if not source.exists():
        raise ValueError(f"local copy {source} does not exist")
    if source.is_dir() and any((source / marker).exists() for marker in ("dataset_dict.json", "dataset_info.json")):
        loaded = datasets.load_from_disk(str(source))
        raw = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        files = sorted(source.glob(f"*{split}*")) if source.is_dir() else [source]
        if not files:
            raise ValueError(f"no file for split {split!r} in {source}")
        suffix = files[0].suffix.lstrip(".")
        builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(suffix)
        if builder is None:
            raise ValueError(f"cannot read {files[0]}: use a save_to_disk folder or json/jsonl/parquet/csv files")
        raw = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    return _converted(spec, raw)


def _converted(spec: TaskSpec, raw):
    """Rows already in the kit's schema keep their columns; hub rows go through the task's converter."""
    if set(COLUMNS) <= set(raw.column_names) and _is_list_of_strings(raw[0]["answers"] if len(raw) else []):
        return raw.select_columns(COLUMNS)
    if spec.convert is None:
        raise ValueError(f"{spec.name} rows need the columns {COLUMNS} with answers as a list of strings")
    return raw.map(spec.convert, with_indices=True, remove_columns=raw.column_names).select_columns(COLUMNS)


def _is_list_of_strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# ---------------------------------------------------------------- tokenisation

def ensure_pad_token(tokenizer) -> bool:
    """Give a tokenizer without a pad token a new one that cannot collide with real tokens.

    Returns True when a token was added (the model's embeddings must then be resized).
    """
    if tokenizer.pad_token_id is not None:
        return False
    tokenizer.add_special_tokens({"pad_token": "<|uld_pad|>"})
    return True


def encode_decoder(tokenizer, render: Callable[[str], str], context: str, answer: str, max_length: int,
                   answer_prefix: str = " ") -> dict | None:
    """``input_ids, attention_mask, labels`` for a decoder: prompt at -100, answer + EOS.

    ``render(context)`` gives the prompt for a (possibly shortened) context. When prompt
    and answer do not fit in ``max_length``, the context is cut, never the answer; None
    when even an empty context does not fit.
    """
    answer_ids = tokenizer(answer_prefix + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt_ids = _fitted_prompt(tokenizer, render, context, max_length - len(answer_ids))
    if prompt_ids is None:
        return None
    return dict(input_ids=prompt_ids + answer_ids, attention_mask=[1] * (len(prompt_ids) + len(answer_ids)),
                labels=[-100] * len(prompt_ids) + answer_ids, truncated=_truncated(tokenizer, render, context, prompt_ids))


def encode_encoder_decoder(tokenizer, render: Callable[[str], str], context: str, answer: str, max_length: int,
                           max_target_length: int) -> dict | None:
    """``input_ids, attention_mask`` (the prompt, context cut to fit) and ``labels`` (answer + EOS)."""
    labels = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(labels) > max_target_length:
        return None
    prompt_ids = _fitted_prompt(tokenizer, render, context, max_length)
    if prompt_ids is None:
        return None
    return dict(input_ids=prompt_ids, attention_mask=[1] * len(prompt_ids), labels=labels,
                truncated=_truncated(tokenizer, render, context, prompt_ids))


def _fitted_prompt(tokenizer, render, context: str, budget: int) -> list[int] | None:
    """Prompt ids within ``budget`` tokens, cutting the context from its end as needed."""
    if budget <= 0:
        return None
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    keep = len(context_ids)
    for _ in range(8):
        text = context if keep == len(context_ids) else tokenizer.decode(context_ids[:keep])
        ids = tokenizer(render(text))["input_ids"]
        overflow = len(ids) - budget
        if overflow <= 0:
            return ids
        if keep == 0:
            return None
        keep = max(0, keep - overflow - 1)
    return None


def _truncated(tokenizer, render, context, prompt_ids) -> bool:
    return len(prompt_ids) < len(tokenizer(render(context))["input_ids"])


def tokenize_dataset(dataset, tokenizer, render: Callable[[dict, str], str], *, is_encoder_decoder: bool,
                     max_length: int, max_target_length: int = 128, answer_column: str = "answers",
                     answer_prefix: str = " "):
    """Tokenise every row; returns ``(tokenised Dataset, report)``.

    ``render(row, context)`` builds the prompt; the target is the row's first answer (or
    the string in ``answer_column``). Rows that cannot fit are left out and counted in the
    report (``{"kept", "too_long", "truncated"}``), never cut mid-answer.
    """
    from datasets import Dataset

    rows, report = [], {"kept": 0, "too_long": 0, "truncated": 0, "too_long_ids": []}
    for row in dataset:
        answer = row[answer_column][0] if isinstance(row[answer_column], list) else row[answer_column]
        render_row = (lambda text, row=row: render(row, text))
        if is_encoder_decoder:
            encoded = encode_encoder_decoder(tokenizer, render_row, row["context"], answer, max_length, max_target_length)
        else:
            encoded = encode_decoder(tokenizer, render_row, row["context"], answer, max_length, answer_prefix)
        if encoded is None:
            report["too_long"] += 1
            report["too_long_ids"].append(row["id"])
            continue
        report["kept"] += 1
        report["truncated"] += encoded.pop("truncated")
        rows.append(dict(id=row["id"], **encoded))
    return Dataset.from_list(rows), report


def side_fields(row: dict, side: str) -> dict:
    """One side's fields of a training pair (``student_input_ids``, ...), their prefix removed.

    >>> side_fields({"student_labels": [1], "teacher_labels": [2], "example": 0}, "teacher")
    {'labels': [2]}
    """
    prefix = f"{side}_"
    return {key.removeprefix(prefix): value for key, value in row.items() if key.startswith(prefix)}


def collate(examples: list[dict], pad_token_id: int, padding_side: str = "right") -> dict:
    """Pad ``input_ids``/``attention_mask``/``labels`` lists into ``[B, T]`` tensors (and
    ``offsets``, ``[T, 2]`` per example where given, into ``[B, T, 2]``).

    Padding gets ``pad_token_id`` in the inputs, 0 in the mask and -100 in the labels.
    Labels are padded to their own longest length (an encoder-decoder's labels differ in
    length from its inputs).

    >>> batch = collate([dict(input_ids=[5, 6], attention_mask=[1, 1], labels=[-100, 6]),
    ...                  dict(input_ids=[7], attention_mask=[1], labels=[7])], pad_token_id=0)
    >>> batch["input_ids"].tolist(), batch["labels"].tolist()
    ([[5, 6], [7, 0]], [[-100, 6], [7, -100]])
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")

    def pad(key, value):
        width = max(len(e[key]) for e in examples)
        rows = []
        for e in examples:
            fill = [value] * (width - len(e[key]))
            rows.append(fill + list(e[key]) if padding_side == "left" else list(e[key]) + fill)
        return torch.tensor(rows, dtype=torch.long)

    batch = dict(input_ids=pad("input_ids", pad_token_id), attention_mask=pad("attention_mask", 0),
                 labels=pad("labels", -100))
    if "offsets" in examples[0]:  # (start, end) characters per label, padded like the labels
        batch["offsets"] = pad("offsets", [0, 0])
    return batch
