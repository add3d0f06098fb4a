"""Pretrained students: the default students after language modelling on the tasks' world.

The paper's students (Pythia, OPT, Bloom) are pretrained language models that have never
seen the tasks' question/answer format. The kit's stand-ins are the default students
trained once on generator text of the same kind (paragraphs about people with a recap
that repeats some facts, and dialogues without summaries: `uld.embedded.pretraining_text`),
never on a question or an answer:

=========================  =========================  ======================================
name                       base                       tokenizer
=========================  =========================  ======================================
pretrained-student         default-student            GPT-2's BPE cut to the corpus
pretrained-student-shared  default-student-shared     the teacher's (the positive control)
=========================  =========================  ======================================

``load_model("pretrained-student")`` loads the folder the kit ships under
``data/students/<name>`` when there is one, else pretrains once into the cache:

    python -m uld pretrain-student --name pretrained-student --out data/students/pretrained-student

The two share every setting and the same texts, so the control differs from the
cross-tokenizer student only by its vocabulary. ``uld.json`` records the recipe and the
held-out loss (nats per token on 200 unseen texts) before and after.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from uld.cache import cache_dir, shipped_or_built
from uld.training_loop import Schedule

__all__ = ["PRETRAINED_STUDENTS", "PretrainingRecipe", "materialise_pretrained_student", "pretrain_student",
           "pretraining_examples"]

PRETRAINED_STUDENTS = {"pretrained-student": "default-student", "pretrained-student-shared": "default-student-shared"}
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "students"
HELD_OUT = 200  # texts after the training texts, for the held-out loss


@dataclass(frozen=True)
class PretrainingRecipe(Schedule):
    """How a student is pretrained: the `Schedule` and the longest text (a few minutes on 2
    CPU cores)."""

    steps: int = 1500
    checkpoint_every: int = 250
    max_length: int = 512


def materialise_pretrained_student(name: str, cache: Path | None = None, recipe: PretrainingRecipe | None = None,
                                   echo=print) -> Path:
    """The folder of a pretrained student: shipped under ``data/students`` (without a
    ``recipe``), else pretrained once into the cache."""
    if name not in PRETRAINED_STUDENTS:
        raise ValueError(f"unknown pretrained student {name!r}; choose from {', '.join(PRETRAINED_STUDENTS)}")
    chosen = recipe or PretrainingRecipe()

    def build(folder: Path) -> Path:
        echo(f"pretraining {name} once ({chosen.steps} steps, minutes on a CPU); it is cached in {folder}")
        return pretrain_student(name, folder, chosen, cache=cache, echo=echo)

    return shipped_or_built(SHIPPED / name, Path(cache or cache_dir()) / "models" / name, build,
                            use_shipped=recipe is None)


def pretrain_student(name: str, folder: Path, recipe: PretrainingRecipe = PretrainingRecipe(), *,
                     cache: Path | None = None, echo=print, progress: bool = True, command: str | None = None) -> Path:
    """Pretrain the base of ``name`` (`PRETRAINED_STUDENTS`) and save it as ``folder``
    (``command``, the command line that asked for it, is recorded in its ``uld.json``)."""
    from uld.models import load_model, load_tokenizer, save_model_folder
    from uld.training_loop import train_steps

    if name not in PRETRAINED_STUDENTS:
        raise ValueError(f"unknown pretrained student {name!r}; choose from {', '.join(PRETRAINED_STUDENTS)}")
    started = time.perf_counter()
    base = PRETRAINED_STUDENTS[name]
    tokenizer, model = load_tokenizer(base, cache), load_model(base, cache=cache)
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
    save_model_folder(Path(folder), model, tokenizer, record)
    echo(f"{name}: held-out loss {before:.3f} -> {after:.3f} nats per token after {record['seconds']:.0f} s")
    return Path(folder)


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
