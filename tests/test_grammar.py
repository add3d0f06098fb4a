"""The known language of notebook 10: its truth, its two vocabularies, and what each loss teaches."""

from __future__ import annotations

import pytest
import torch

from uld.alignment import shared_vocabulary
from uld.grammar import METHODS, MarkovLanguage, evaluate_student, train_student


@pytest.fixture(scope="module")
def language():
    return MarkovLanguage.make(words=12, seed=0)


def test_the_truth_is_a_distribution_over_words_and_the_end(language):
    rows = language.transitions
    assert rows.shape == (language.n_words + 2, language.n_words + 1)
    torch.testing.assert_close(rows[: language.n_words].sum(-1), torch.ones(language.n_words, dtype=torch.float64))
    assert rows[language.bos, language.eos] == 0 and rows[language.bos].sum() == pytest.approx(1.0)
    truth = language.true_distributions(torch.tensor([[language.bos, 3, language.eos, language.pad]]))
    assert truth.shape == (1, 4, language.vocab_size)
    assert (truth[..., language.bos] == 0).all() and (truth[..., language.pad] == 0).all()
    torch.testing.assert_close(truth.sum(-1), torch.ones(1, 4, dtype=torch.float64))


def test_sentences_follow_the_chain_and_end_with_eos(language):
    sentences = language.sample(200, torch.Generator().manual_seed(0), max_words=6)
    assert all(s[-1] == language.eos and language.eos not in s[:-1] and len(s) <= 7 for s in sentences)
    for sentence in sentences:
        for current, following in zip([language.bos] + sentence[:-1], sentence):
            assert language.transitions[current, following] > 0


def test_two_tokenizers_write_the_same_text_with_shuffled_ids_and_share_every_word(language):
    sentence = language.sample(1, torch.Generator().manual_seed(3))[0]
    text = language.text(sentence)
    teacher, student = language.tokenizer("teacher"), language.tokenizer("student")
    assert teacher(text)["input_ids"] == sentence[:-1]
    assert student(text)["input_ids"] == language.student_ids(sentence)[:-1]
    assert language.student_ids(sentence) != sentence
    shared = shared_vocabulary(student, teacher)
    assert len(shared.student) == language.n_words
    assert (language.shuffle[shared.teacher] == shared.student).all()  # the pairs are the words
    student_view = torch.arange(language.vocab_size, dtype=torch.float64).expand(2, -1)
    reordered = language.in_teacher_ids(student_view)
    assert reordered[0, : language.n_words].tolist() == language.shuffle.double().tolist()
    with pytest.raises(ValueError, match="order"):
        language.tokenizer("other")


def test_batches_ignore_bos_and_padding(language):
    input_ids, labels = language.batch([[1, language.eos], [2, 3, 4, language.eos]], student_ids=True)
    assert input_ids[:, 0].tolist() == [language.bos] * 2 and input_ids[0, -1] == language.pad
    assert labels[0].tolist() == [-100, int(language.shuffle[1]), language.eos, -100, -100]


def test_bad_settings_are_refused(language):
    with pytest.raises(ValueError, match="words"):
        MarkovLanguage.make(words=1)
    with pytest.raises(ValueError, match="method"):
        train_student(language, language.sample(4, torch.Generator()), "ulds")
    with pytest.raises(ValueError, match="sentence"):
        train_student(language, [], "uld")


def test_uld_alone_learns_the_profile_not_the_tokens_and_the_hybrid_learns_both(language):
    train = language.sample(48, torch.Generator().manual_seed(1))
    test = language.sample(48, torch.Generator().manual_seed(2))
    found = {}
    for method in METHODS:
        model = train_student(language, train, method, seed=0, steps=80)
        found[method] = {k: sum(v) / len(v) for k, v in evaluate_student(model, language, test,
                                                                          method != "kl").items()}
    assert found["uld_alone"]["sorted_l1"] < found["seqkd"]["sorted_l1"]  # the profile, learnt
    assert max(found, key=lambda m: found[m]["kl"]) == "uld_alone"
    assert found["uld_alone"]["top1"] < found["seqkd"]["top1"]
    assert found["hybrid"]["kl"] < found["uld"]["kl"] and found["kl"]["kl"] < found["seqkd"]["kl"]
    assert found["hybrid"]["kl"] == pytest.approx(found["kl"]["kl"], rel=0.3)  # same loss, other ids
