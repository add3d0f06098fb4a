"""Pretrained students: the default students after language modelling on the tasks' world.

The paper's students (Pythia, OPT, Bloom) are pretrained language models that have never
seen the tasks' question/answer format. The kit's stand-ins are the default students
trained once on generator text of the same kind (paragraphs about people with a recap
that repeats some facts, and dialogues without summaries: `uld.embedded.pretraining_text`),
never on a question or an answer:

===============================  ============================  ==================================
name                             base (width x layers)         tokenizer
===============================  ============================  ==================================
pretrained-student               default-student (64 x 2)      GPT-2's BPE cut to the corpus
pretrained-student-shared        default-student-shared        the teacher's (the positive control)
pretrained-student-large         default-student-large         GPT-2's BPE cut to the corpus
                                 (128 x 4, the teacher's size)
pretrained-student-shared-large  default-student-shared-large  the teacher's (the positive control)
===============================  ============================  ==================================

The large pair is the main job's (`configs/grids/cpu.yaml`): four times the compute per
token, and the capacity to absorb what a teacher's logits carry; the small pair keeps the
ablations of notebook 08 cheap.

``load_model("pretrained-student")`` loads the folder the kit ships under
``data/students/<name>`` when there is one, else pretrains once into the cache:

    python -m uld pretrain-student --name pretrained-student --out data/students/pretrained-student

Each pair shares every setting and the same texts, so the control differs from the
cross-tokenizer student only by its vocabulary. ``uld.json`` records the recipe and the
held-out loss (nats per token on 200 unseen texts) before and after.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from uld.storage import cache_dir, shipped_or_built
from uld.training_loop import Schedule

__all__ = ["PRETRAINED_STUDENTS", "PretrainingRecipe", "materialise_pretrained_student", "pretrain_student",
           "pretraining_examples"]

PRETRAINED_STUDENTS = {"pretrained-student": "default-student", "pretrained-student-shared": "default-student-shared",
                       "pretrained-student-large": "default-student-large",
                       "pretrained-student-shared-large": "default-student-shared-large"}
# How many stages of the recipe the shipped student had (each from the last, texts the same).
STAGES = {"pretrained-student-large": 2, "pretrained-student-shared-large": 2}
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "students"
HELD_OUT = 200  # texts after the training texts, for the held-out loss


@dataclass(frozen=True)
class PretrainingRecipe(Schedule):
    """How a student is pretrained: the `Schedule` and the longest text (a few minutes on 2
    CPU cores)."""

    steps: int = 1500
    checkpoint_every: int = 250
    max_length: int = 512
    base: str | None = None  # a folder pretrained under the same name: continue from it (a second stage)


def materialise_pretrained_student(name: str, cache: Path | None = None, recipe: PretrainingRecipe | None = None,
                                   echo=print) -> Path:
    """The folder of a pretrained student: shipped under ``data/students`` (without a
    ``recipe``), else pretrained once into the cache (in as many stages as the shipped one,
    `STAGES`; with a ``recipe``, in one)."""
    if name not in PRETRAINED_STUDENTS:
        raise ValueError(f"unknown pretrained student {name!r}; choose from {', '.join(PRETRAINED_STUDENTS)}")
    chosen = recipe or PretrainingRecipe()
    stages = 1 if recipe else STAGES.get(name, 1)

    def build(folder: Path) -> Path:
        echo(f"pretraining {name} once ({stages} x {chosen.steps} steps, minutes on a CPU); it is cached in {folder}")
        base = None
        for stage in range(1, stages + 1):
            target = folder if stage == stages else folder.with_name(f"{folder.name}.stage{stage}")
            pretrain_student(name, target, replace(chosen, base=base), cache=cache, echo=echo)
            base = str(target)
        return folder

    return shipped_or_built(SHIPPED / name, Path(cache or cache_dir()) / "models" / name, build,
                            use_shipped=recipe is None)


def pretrain_student(name: str, folder: Path, recipe: PretrainingRecipe = PretrainingRecipe(), *,
                     cache: Path | None = None, echo=print, progress: bool = True, command: str | None = None) -> Path:
    """Pretrain the base of ``name`` (`PRETRAINED_STUDENTS`) and save it as ``folder``
    (``command``, the command line that asked for it, is recorded in its ``uld.json``).

    With ``recipe.base``, a folder this function saved for the same ``name``, training
    continues from it on the same texts (a second stage, its schedule restarted); the
    base's record is kept as ``continued_from``.
    """
    from uld.model_files import base_folder, open_model, open_tokenizer, save_model_folder
    from uld.training_loop import train_steps

    if name not in PRETRAINED_STUDENTS:
        raise ValueError(f"unknown pretrained student {name!r}; choose from {', '.join(PRETRAINED_STUDENTS)}")
    started = time.perf_counter()
    base = PRETRAINED_STUDENTS[name]
    earlier = _earlier_stage(name, recipe.base) if recipe.base else None
    start = recipe.base or base
    start_folder = base_folder(start, cache)
    tokenizer, model = open_tokenizer(start_folder, start), open_model(start_folder, start)
    count = recipe.steps * recipe.batch_size
    examples = pretraining_examples(tokenizer, count + HELD_OUT, recipe.max_length)
    training, held_out = examples[:count], examples[count:]
    before = held_out_loss(model, held_out, tokenizer.pad_token_id)
    scratch = Path(folder).with_name(Path(folder).name + ".partial")
    train_steps(model, training, schedule=recipe, pad_token_id=tokenizer.pad_token_id,
                checkpoint=scratch / "checkpoint.pt", identity={"name": name, "recipe": asdict(recipe)},
                echo=echo, progress=progress, description=f"pretraining {name}")
    after = held_out_loss(model, held_out, tokenizer.pad_token_id)
    record = {"name": name, "role": "student", "base": base, "recipe": asdict(recipe), "texts": count,
              "held_out_loss": {"before": round(before, 4), "after": round(after, 4)},
              "seconds": round(time.perf_counter() - started, 1), "command": command}
    if earlier is not None:
        record["continued_from"] = earlier
    save_model_folder(Path(folder), model, tokenizer, record)
    echo(f"{name}: held-out loss {before:.3f} -> {after:.3f} nats per token after {record['seconds']:.0f} s")
    return Path(folder)


def _earlier_stage(name: str, folder: str) -> dict:
    """The record of a first stage to continue ``name`` from; ``ValueError`` unless it is one."""
    path = Path(folder) / "uld.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    if record.get("name") != name or "held_out_loss" not in record:
        raise ValueError(f"base {folder} is not a pretrained {name} (its uld.json names "
                         f"{record.get('name')!r}); continue a student from its own earlier stage")
    return record


def pretraining_examples(tokenizer, count: int, max_length: int, seed: int = 0) -> list[dict]:
    """The first ``count`` pretraining texts (`uld.embedded.pretraining_text`) as
    ``input_ids``/``attention_mask``, each ending with EOS and cut to ``max_length``
    (``labels`` all -100: no answers, the loss reads the whole text)."""
    from uld.embedded import SEED, pretraining_text

    examples = []
    for index in range(count):
        ids = tokenizer(pretraining_text(index, SEED + seed), add_special_tokens=False)["input_ids"]
        ids = ids[:max_length - 1] + [tokenizer.eos_token_id]
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(ids)})
    return examples


def held_out_loss(model, examples: list[dict], pad_token_id: int, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats per token) of ``model`` on ``examples``."""
    import torch

    from uld.data import collate
    from uld.training_loop import language_model_loss

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start:start + batch_size], pad_token_id)
            count = int(batch["attention_mask"][:, 1:].sum())
            total += float(language_model_loss(model, batch)) * count
            tokens += count
    model.train(was_training)
    return total / tokens
