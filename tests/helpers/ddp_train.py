"""Worker for tests/test_distributed.py: a short ULD training under torchrun; each rank
writes a fingerprint of its student weights to OUT/rank<N>.json."""

import hashlib
import json
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments

from uld import ULDLoss
from uld.data import load_task
from uld.models import load_model, load_tokenizer
from uld.trainer import DistillationTrainer, PairCollator, build_pairs

def main() -> None:
    out, cache = Path(sys.argv[1]), Path(sys.argv[2])
    rows = load_task("extractive_qa", "train", limit=32)
    rows = rows.add_column("teacher_answer", [answers[0] for answers in rows["answers"]])
    teacher, teacher_tokenizer = load_model("default-teacher", cache=cache), load_tokenizer("default-teacher", cache)
    student, student_tokenizer = load_model("default-student", cache=cache), load_tokenizer("default-student", cache)
    pairs, _ = build_pairs(rows, kind="extractive_qa", method="uld", student_tokenizer=student_tokenizer,
                           teacher_tokenizer=teacher_tokenizer, shots=0, max_length=1024)
    args = TrainingArguments(output_dir=str(out / "checkpoints"), per_device_train_batch_size=4, num_train_epochs=1,
                             learning_rate=1e-3, save_strategy="no", report_to=[], remove_unused_columns=False, seed=0,
                             use_cpu=True, ddp_backend="gloo", disable_tqdm=True, logging_steps=1)
    trainer = DistillationTrainer(model=student, args=args, train_dataset=pairs, teacher=teacher,
                                  loss_fn=ULDLoss(distillation_weight=1.5, skip_student_eos=True),
                                  data_collator=PairCollator(student_tokenizer.pad_token_id, teacher_tokenizer.pad_token_id))
    trainer.train()
    weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    fingerprint = {"rank": trainer.args.process_index, "world_size": trainer.args.world_size,
                   "sha256": hashlib.sha256(weights.numpy().tobytes()).hexdigest(), "sum": float(weights.double().sum()),
                   "steps": trainer.state.global_step}
    (out / f"rank{trainer.args.process_index}.json").write_text(json.dumps(fingerprint))
    if torch.distributed.is_initialized():  # a process group left to interpreter exit can abort the rank
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
