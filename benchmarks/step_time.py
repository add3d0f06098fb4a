"""Seconds per training step on the embedded default pair: sft, uld live, uld from the teacher cache.

    python benchmarks/step_time.py                  # 64 pairs, batch 8, 2 threads (about a minute)
    python benchmarks/step_time.py --steps 40 --batch 16

Every method trains the same student from the same start on the same pairs (the gold
answer stands in for the teacher's, so no generation is timed); the first step is a
warm-up and is not counted. Prints a table and writes benchmarks/results/step_time.json.
The teacher cache (top-k 256, float16) is built before its row and not timed; its build
time and bytes per answer token are reported beside it. Goal: a `uld` step from the
cache costs at most 1.2x an `sft` step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainingArguments


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def measure(variant: str, args) -> dict:
    from uld import ULDLoss
    from uld.data import TASKS, load_task
    from uld.models import load_model, load_tokenizer
    from uld.trainer import DistillationTrainer, PairCollator, build_pairs

    from uld.teacher_cache import build_teacher_cache

    method = "uld" if variant.startswith("uld") else variant
    torch.set_num_threads(args.threads)
    rows = load_task(args.task, "train", limit=args.steps * args.batch)
    rows = rows.add_column("teacher_answer", [answers[0] for answers in rows["answers"]])
    teacher_tokenizer, student_tokenizer = load_tokenizer(args.teacher), load_tokenizer(args.student)
    pairs, _ = build_pairs(rows, kind=TASKS[args.task].kind, method=method, student_tokenizer=student_tokenizer,
                           teacher_tokenizer=teacher_tokenizer, shots=args.shots)
    cache, extra = None, {}
    if variant == "uld_cache":
        started = time.perf_counter()
        cache = build_teacher_cache(load_model(args.teacher), pairs, Path(args.scratch) / "teacher_cache",
                                    top_k=args.top_k, pad_token_id=teacher_tokenizer.pad_token_id, progress=False)
        extra = {"cache_build_seconds": time.perf_counter() - started, "bytes_per_token": cache.bytes_per_token}
    torch.manual_seed(0)
    student = load_model(args.student)
    timer = StepTimer()
    training = TrainingArguments(output_dir=str(Path(args.scratch) / "trainer"), per_device_train_batch_size=args.batch,
                                 num_train_epochs=1, learning_rate=1e-3, save_strategy="no", report_to=[],
                                 remove_unused_columns=False, seed=0, disable_tqdm=True, use_cpu=True, logging_steps=10**6)
    trainer = DistillationTrainer(
        model=student, args=training, train_dataset=pairs, callbacks=[timer],
        teacher=load_model(args.teacher) if variant == "uld" else None,
        loss_fn=ULDLoss(distillation_weight=1.5, skip_student_eos=True) if method == "uld" else None,
        data_collator=PairCollator(student_tokenizer.pad_token_id, teacher_tokenizer.pad_token_id, teacher_cache=cache))
    trainer.train()
    counted = timer.times[1:]
    return {"variant": variant, "steps": len(counted), "seconds_per_step": statistics.median(counted), **extra}


LABELS = {"sft": "sft", "uld": "uld (live teacher)", "uld_cache": "uld (teacher cache)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="extractive_qa")
    parser.add_argument("--teacher", default="default-teacher")
    parser.add_argument("--student", default="default-student")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=256, help="kept per teacher position in the cache")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "step_time.json")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        args.scratch = scratch
        rows = [measure(variant, args) for variant in LABELS]
    del args.scratch
    base = rows[0]["seconds_per_step"]
    print(f"{args.student} learning from {args.teacher} on {args.task}, batch {args.batch}, "
          f"{args.threads} threads, median over {rows[0]['steps']} steps after a warm-up")
    print(f"{'variant':<22}{'s/step':>10}{'vs sft':>10}")
    for row in rows:
        row["vs_sft"] = row["seconds_per_step"] / base
        print(f"{LABELS[row['variant']]:<22}{row['seconds_per_step']:>10.3f}{row['vs_sft']:>9.2f}x")
    cached = rows[-1]
    print(f"teacher cache: built in {cached['cache_build_seconds']:.1f} s (not counted), "
          f"{cached['bytes_per_token']} bytes per answer token (top-{args.top_k}, float16)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
