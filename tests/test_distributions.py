"""`uld.distributions`: the rows ULD compares on real answers, and how their mass is spread."""

from __future__ import annotations

import pytest
import torch

from uld import ULDLoss
from uld.distributions import compared_distributions, mass_profile
from uld.distance import uld_distance
from uld.models import load_model
from uld.trainer import build_pairs


@pytest.fixture(scope="module")
def compared(pair):
    student = load_model("default-student", cache=pair["cache"]).eval()
    pairs, _ = build_pairs(pair["rows"].select(range(6)), kind="extractive_qa", method="uld", shots=1,
                           student_tokenizer=pair["student_tokenizer"], teacher_tokenizer=pair["teacher_tokenizer"])
    rows = compared_distributions(student, pair["teacher"], pairs, pair["student_tokenizer"],
                                  pair["teacher_tokenizer"])
    return student, pairs, rows


def test_the_rows_are_the_ones_the_loss_compares(pair, compared):
    student, pairs, rows = compared
    loss = ULDLoss(crossentropy_weight=0, distillation_weight=1)
    for number, example in enumerate(pairs):
        s_ids, s_labels, t_ids, t_labels = (torch.tensor([example[key]]) for key in (
            "student_input_ids", "student_labels", "teacher_input_ids", "teacher_labels"))
        with torch.no_grad():
            expected = loss(student(input_ids=s_ids).logits, pair["teacher"](input_ids=t_ids).logits, s_labels,
                            t_labels).distillation
        mine = rows.example == number
        assert int(mine.sum()) == len(loss.alignment(s_labels, t_labels)[0])
        torch.testing.assert_close(uld_distance(rows.student[mine], rows.teacher[mine]).mean(), expected,
                                   atol=1e-5, rtol=1e-5)
        first_student_answer = next(label for label in example["student_labels"] if label != -100)
        assert int(rows.student_target[mine][0]) == first_student_answer
    assert rows.student.shape[1] == len(pair["student_tokenizer"]) and rows.teacher.shape[1] == 1355
    torch.testing.assert_close(rows.teacher.sum(-1), torch.ones(len(rows.teacher)))
    assert len(rows.student_token) == len(rows.teacher_token) == len(rows.example)


def test_pairs_with_nothing_to_compare_are_refused(pair, compared):
    student, pairs, _ = compared
    silent = pairs.map(lambda row: {"student_labels": [-100] * len(row["student_labels"])})
    with pytest.raises(ValueError, match="no answer position is compared"):
        compared_distributions(student, pair["teacher"], silent, pair["student_tokenizer"], pair["teacher_tokenizer"])


def test_mass_profile_reads_entropy_top_1_and_tails():
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125], [1.0, 0.0, 0.0, 0.0]])
    profile = mass_profile(probs, ks=(1, 2, 8))
    torch.testing.assert_close(profile["entropy"], torch.tensor([1.75 * torch.log(torch.tensor(2.0)).item(), 0.0],
                                                                dtype=torch.float64))
    assert profile["top-1"].tolist() == [0.5, 1.0]
    assert profile["beyond top 1"].tolist() == [0.5, 0.0] and profile["beyond top 2"].tolist() == [0.25, 0.0]
    assert profile["beyond top 8"].tolist() == [0.0, 0.0]  # k beyond the vocabulary: nothing left over
