"""The methods table: one place says what each method needs and ignores."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from uld.distill import DistillConfig
from uld.methods import METHODS, method, needs_teacher_answers, needs_teacher_logits, unread_settings


def test_the_table_says_what_each_method_needs():
    assert list(METHODS) == ["raw", "sft", "seqkd", "uld", "kl"]
    assert [name for name in METHODS if needs_teacher_answers(name)] == ["seqkd", "uld", "kl"]
    assert [name for name in METHODS if needs_teacher_logits(name)] == ["uld", "kl"]
    assert {name: row.loss for name, row in METHODS.items() if row.loss} == {"uld": "uld", "kl": "kl"}
    assert not METHODS["raw"].trains and all(row.trains for name, row in METHODS.items() if name != "raw")


def test_unread_settings_are_config_fields_and_the_distance_settings_are_ignored_without_logits():
    names = {field.name for field in fields(DistillConfig)}
    for name, row in METHODS.items():
        assert set(row.unread) <= names, name
        assert ("teacher_temperature" in row.unread) == (not row.teacher_logits), name
    assert unread_settings("uld") == () and "distillation_weight" in unread_settings("seqkd")


def test_an_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown method 'dpo'; choose from raw, sft, seqkd, uld, kl"):
        method("dpo")
    with pytest.raises(ValueError, match="unknown method 'dpo'"):
        DistillConfig(task="extractive_qa", method="dpo", out="x")


def test_checking_a_config_does_not_import_transformers():
    code = ("import sys; from uld.distill import DistillConfig; import uld.replicate; "
            "DistillConfig(task='extractive_qa', method='uld', teacher_cache=True, out='x'); "
            "print('transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
