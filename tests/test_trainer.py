"""The distiller end to end on the tiny default pair: pairs, collation, training, answers."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from uld import ULDLoss
from uld.data import load_task
from uld.generation import answer_questions
from uld.models import load_model
from uld.trainer import DistillationTrainer, PairCollator, build_pairs


def test_pairs_hold_each_side_in_its_own_tokens(pair):
    dataset, report = build_pairs(pair["rows"], kind="extractive_qa", method="uld",
                                  student_tokenizer=pair["student_tokenizer"], teacher_tokenizer=pair["teacher_tokenizer"],
                                  shots=1, max_length=1024)
    assert report == {"kept": 24, "too_long": 0}
    example, row = dataset[0], pair["rows"][0]
    student_answer = [t for t in example["student_labels"] if t != -100]
    teacher_answer = [t for t in example["teacher_labels"] if t != -100]
    eos = pair["student_tokenizer"].eos_token_id
    assert student_answer[-1] == eos and teacher_answer[-1] != pair["teacher_tokenizer"].eos_token_id
    assert pair["student_tokenizer"].decode(student_answer[:-1]).strip() == row["teacher_answer"].strip()
    assert pair["teacher_tokenizer"].decode(teacher_answer).strip() == row["teacher_answer"].strip()
    batch = PairCollator(pair["student_tokenizer"].pad_token_id, pair["teacher_tokenizer"].pad_token_id)(
        [dataset[0], dataset[1]])
    assert set(batch) == {"input_ids", "attention_mask", "labels", "teacher_input_ids", "teacher_attention_mask",
                          "teacher_labels"}
    sft, _ = build_pairs(pair["rows"], kind="extractive_qa", method="sft", student_tokenizer=pair["student_tokenizer"])
    gold = [t for t in sft[0]["student_labels"] if t != -100][:-1]
    assert pair["student_tokenizer"].decode(gold).strip() == row["answers"][0]
    with pytest.raises(ValueError, match="needs the teacher's tokenizer"):
        build_pairs(pair["rows"], kind="extractive_qa", method="uld", student_tokenizer=pair["student_tokenizer"])


@pytest.mark.parametrize("method", ["seqkd", "uld"])
def test_training_moves_the_student_and_logs_the_components(pair, method, tmp_path):
    dataset, _ = build_pairs(pair["rows"], kind="extractive_qa", method=method, shots=1, max_length=1024,
                             student_tokenizer=pair["student_tokenizer"], teacher_tokenizer=pair["teacher_tokenizer"])
    student = load_model("default-student", cache=pair["cache"])
    before = [p.detach().clone() for p in student.parameters()]
    teacher_before = [p.detach().clone() for p in pair["teacher"].parameters()]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
                             remove_unused_columns=False, seed=0, disable_tqdm=True, use_cpu=True)
    trainer = DistillationTrainer(model=student, args=args, train_dataset=dataset,
                                  data_collator=PairCollator(pair["student_tokenizer"].pad_token_id,
                                                             pair["teacher_tokenizer"].pad_token_id),
                                  teacher=pair["teacher"] if method == "uld" else None,
                                  loss_fn=ULDLoss(distillation_weight=1.5, skip_student_eos=True) if method == "uld" else None)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3 and all(entry["crossentropy"] > 0 for entry in logs)
    if method == "uld":
        assert all(entry["distillation"] > 0 for entry in logs)
        assert all(abs(e["loss"] - e["crossentropy"] - e["distillation"]) < 1e-3 * e["loss"] for e in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, pair["teacher"].parameters()))
    answers = answer_questions(student, pair["student_tokenizer"], load_task("extractive_qa", "test", limit=5),
                               kind="extractive_qa", max_new_tokens=6)
    assert len(answers) == 5 and all("\n" not in a for a in answers)


def test_a_distillation_weight_without_a_teacher_is_refused(pair, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationTrainer(model=load_model("default-student", cache=pair["cache"]), args=args,
                            loss_fn=ULDLoss(distillation_weight=1.5))


def train_briefly(pair, method, loss_fn, tmp_path, steps_log):
    dataset, _ = build_pairs(pair["rows"], kind="extractive_qa", method=method, shots=1, max_length=1024,
                             student_tokenizer=pair["student_tokenizer"], teacher_tokenizer=pair["teacher_tokenizer"])
    torch.manual_seed(0)
    student = load_model("default-student", cache=pair["cache"])
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
                             remove_unused_columns=False, seed=0, disable_tqdm=True, use_cpu=True)
    trainer = DistillationTrainer(model=student, args=args, train_dataset=dataset, teacher=pair["teacher"] if loss_fn else None,
                                  loss_fn=loss_fn, data_collator=PairCollator(pair["student_tokenizer"].pad_token_id,
                                                                              pair["teacher_tokenizer"].pad_token_id))
    trainer.train()
    steps_log.extend(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    return student


def test_lambda_zero_reproduces_seqkd(pair, tmp_path):
    seqkd_losses, zero_losses = [], []
    seqkd = train_briefly(pair, "seqkd", None, tmp_path / "a", seqkd_losses)
    zero = train_briefly(pair, "uld", ULDLoss(distillation_weight=0.0, skip_student_eos=True), tmp_path / "b", zero_losses)
    assert len(seqkd_losses) == 3 and seqkd_losses == pytest.approx(zero_losses, rel=1e-5)
    for a, b in zip(seqkd.parameters(), zero.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_uld_term_alone_reaches_the_student(pair, tmp_path):
    dataset, _ = build_pairs(pair["rows"], kind="extractive_qa", method="uld", shots=1, max_length=1024,
                             student_tokenizer=pair["student_tokenizer"], teacher_tokenizer=pair["teacher_tokenizer"])
    student = load_model("default-student", cache=pair["cache"])
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, remove_unused_columns=False)
    trainer = DistillationTrainer(model=student, args=args, teacher=pair["teacher"],
                                  loss_fn=ULDLoss(distillation_weight=1.5, crossentropy_weight=0.0, skip_student_eos=True))
    batch = PairCollator(pair["student_tokenizer"].pad_token_id, pair["teacher_tokenizer"].pad_token_id)(
        [dataset[i] for i in range(4)])
    loss = trainer.compute_loss(student, batch)
    loss.backward()
    assert loss.item() > 0
    norms = [p.grad.norm().item() for p in student.parameters() if p.grad is not None]
    assert norms and max(norms) > 0
    assert all(p.grad is None for p in pair["teacher"].parameters())


def test_offsets_pairs_train_with_the_loss_the_offsets_rule_gives(pair):
    from uld.trainer import label_offsets

    dataset, _ = build_pairs(pair["rows"].select(range(8)), kind="extractive_qa", method="uld", shots=1,
                             student_tokenizer=pair["student_tokenizer"], teacher_tokenizer=pair["teacher_tokenizer"],
                             offsets=True)
    row = dataset[0]
    assert len(row["student_offsets"]) == len(row["student_labels"])
    assert len(row["teacher_offsets"]) == len(row["teacher_labels"])
    student_answer = [span for span, label in zip(row["student_offsets"], row["student_labels"]) if label != -100]
    teacher_answer = [span for span, label in zip(row["teacher_offsets"], row["teacher_labels"]) if label != -100]
    assert student_answer[0][0] == teacher_answer[0][0] == 0
    assert student_answer[-1][0] == student_answer[-1][1] == teacher_answer[-1][1]  # the EOS: the empty span at the end
    batch = PairCollator(pair["student_tokenizer"].pad_token_id, pair["teacher_tokenizer"].pad_token_id)(
        [dataset[i] for i in range(4)])
    assert batch["offsets"].shape == (*batch["labels"].shape, 2)
    assert batch["teacher_offsets"].shape == (*batch["teacher_labels"].shape, 2)
    with pytest.raises(ValueError, match="methods uld and kl only"):
        build_pairs(pair["rows"].select(range(2)), kind="extractive_qa", method="seqkd", offsets=True,
                    student_tokenizer=pair["student_tokenizer"])
    assert label_offsets(pair["student_tokenizer"], [-100, -100], with_eos=False) == [[0, 0], [0, 0]]
