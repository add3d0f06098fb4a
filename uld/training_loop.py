"""The plain training loop of the kit's own models: task teachers and pretrained students.

(Distillation runs use `transformers.Trainer`, `uld.trainer`; these models are trained
once, before any distillation, on freshly generated text.)

Each step takes the next ``batch_size`` examples (``input_ids``, ``attention_mask`` and,
for answers, ``labels``), so every example is seen once; AdamW with a linear warm-up and a
cosine decay to zero, gradients clipped at 1. A checkpoint every ``checkpoint_every`` steps
holds the model, the optimiser, the schedule and the curve so far; a run with the same
``identity`` resumes from it.

    curve = train_steps(model, examples, schedule=Schedule(steps=500), pad_token_id=0,
                        checkpoint=Path("teacher.partial/checkpoint.pt"), identity={"recipe": ...})
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["Schedule", "train_steps", "language_model_loss", "with_settings"]


@dataclass(frozen=True)
class Schedule:
    """How many steps, how large, how fast."""

    steps: int = 500
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    checkpoint_every: int = 100
    seed: int = 0

    def factor(self, step: int) -> float:
        """The learning rate's multiplier at ``step``: linear warm-up, then cosine decay to zero.

        >>> schedule = Schedule(steps=100, warmup_steps=10)
        >>> [round(schedule.factor(s), 3) for s in (0, 9, 50, 100)]
        [0.1, 0.98, 0.5, 0.0]
        """
        warmup = min(1.0, (step + 1) / max(self.warmup_steps, 1))
        return warmup * 0.5 * (1 + math.cos(math.pi * min(step, self.steps) / self.steps))


def language_model_loss(model, batch: dict, answer_weight: float = 0.0):
    """Cross-entropy of the next token over the whole text, plus ``answer_weight`` times the
    cross-entropy on the ``labels`` positions (the answers) when the weight is not zero."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logits = logits.reshape(-1, logits.shape[-1])
    text = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100).reshape(-1)
    loss = F.cross_entropy(logits, text, ignore_index=-100)
    if answer_weight:
        loss = loss + answer_weight * F.cross_entropy(logits, batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    return loss


def train_steps(model, examples: list[dict], *, schedule: Schedule, pad_token_id: int, checkpoint: Path,
                identity: dict, loss: Callable = language_model_loss, every: int = 0,
                measure: Callable[[], dict] | None = None, echo=print, progress: bool = True,
                description: str = "training") -> list[dict]:
    """Train ``model`` in place for ``schedule.steps`` steps; returns the curve.

    Every ``every`` steps (0: never) ``measure()`` gives scores that join the curve as
    ``{"step": step, **scores}``. ``examples`` must hold ``steps * batch_size`` items.
    """
    import torch
    from tqdm.auto import tqdm

    from uld.data import collate

    if len(examples) < schedule.steps * schedule.batch_size:
        raise ValueError(f"{len(examples)} examples for {schedule.steps} steps of {schedule.batch_size}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.learning_rate, betas=(0.9, 0.98), weight_decay=0.0)
    rates = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
    step, curve = _resume(checkpoint, identity, model, optimizer, rates)
    torch.manual_seed(schedule.seed + step)
    model.train()
    bar = tqdm(total=schedule.steps, initial=step, desc=description, disable=not progress)
    while step < schedule.steps:
        batch = collate(examples[step * schedule.batch_size:(step + 1) * schedule.batch_size], pad_token_id)
        value = loss(model, batch)
        optimizer.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        rates.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{value.item():.3f}")
        if every and measure is not None and step % every == 0 and step < schedule.steps:
            curve.append({"step": step, **measure()})
            echo(f"step {step}: {', '.join(f'{k} {v:.1f}' for k, v in curve[-1].items() if k != 'step')}")
            model.train()
        if step % schedule.checkpoint_every == 0 and step < schedule.steps:
            _save_checkpoint(checkpoint, identity, step, curve, model, optimizer, rates)
    bar.close()
    model.eval()
    return curve


def _save_checkpoint(path: Path, identity: dict, step: int, curve: list, model, optimizer, rates) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".partial")
    torch.save({"identity": identity, "step": step, "curve": curve, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": rates.state_dict()}, scratch)
    os.replace(scratch, path)


def _resume(path: Path, identity: dict, model, optimizer, rates) -> tuple[int, list]:
    """The step to continue from and the curve so far: a checkpoint's (same identity), else 0."""
    import torch

    if not path.exists():
        return 0, []
    state = torch.load(path, weights_only=False)
    if state.get("identity") != identity:
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rates.load_state_dict(state["schedule"])
    return state["step"], state["curve"]


def with_settings(recipe, settings: list[str]):
    """``recipe`` (a dataclass) with ``field=value`` strings applied, typed as its fields are.

    >>> with_settings(Schedule(), ["steps=4000", "learning_rate=1e-3"]).steps
    4000
    """
    from dataclasses import fields, replace

    types = {f.name: str if getattr(recipe, f.name) is None else type(getattr(recipe, f.name)) for f in fields(recipe)}
    changes = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or name not in types:
            raise ValueError(f"expected FIELD=VALUE with a field of {type(recipe).__name__} ({', '.join(types)}), "
                             f"got {setting!r}")
        try:
            changes[name] = types[name](value)
        except ValueError:
            raise ValueError(f"{name} must be a {types[name].__name__}, got {value!r}") from None
    return replace(recipe, **changes)
