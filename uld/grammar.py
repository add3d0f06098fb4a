"""A small language whose next-token distributions are known exactly, written under two
vocabularies: what each distillation loss teaches, measured against the truth (notebook 10).

`MarkovLanguage`: ``words`` made-up words and an end token. A sentence starts at ``BOS``
and each next token is drawn from a distribution that depends on the current word only
(a first-order Markov chain); each row of the transition matrix is a sparse Dirichlet
draw, a few likely successors and a long tail, like a language model's next-token
distribution. The teacher *is* the chain: its logits are the true log-probabilities.

Two word-level tokenizers write the same sentences with the same pieces and different ids
(`MarkovLanguage.tokenizer`, ``order="teacher"`` or ``"student"``, a fixed shuffle of the
words): the purest case of two vocabularies, where only the identities differ. A student
trained on the teacher's own ids is the shared-vocabulary control (token-level KL is
defined there); a student on the shuffled ids can only be taught by a cross-vocabulary
loss: ULD (sorted, blind to which token is which), or the hybrid loss, whose shared tokens
`uld.alignment.shared_vocabulary` finds by their text.

Ids: words ``0 .. W-1`` in the teacher's order (shuffled in the student's), then ``EOS``,
``BOS`` (the prompt, never predicted) and ``PAD``, the same on both sides.

>>> language = MarkovLanguage.make(words=6, seed=1)
>>> sentence = language.sample(1, torch.Generator().manual_seed(0))[0]
>>> language.text(sentence), sentence, language.student_ids(sentence)   # EOS is 6 on both sides
('vana basu tino tino tino', [1, 4, 0, 0, 0, 6], [0, 4, 5, 5, 5, 6])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MarkovLanguage", "METHODS", "tiny_student", "train_student", "evaluate_student"]

METHODS = ("seqkd", "uld", "uld_alone", "hybrid", "kl")
_SYLLABLES = [c + v for c in "kptbdgmnslrvfz" for v in "aeiou"]


@dataclass
class MarkovLanguage:
    """``transitions [W + 2, W + 1]``: row ``w`` (a word, or ``W + 1`` for BOS) is the
    distribution of the next token over the words and EOS (float64); ``shuffle [W]`` the
    student's id of each teacher word."""

    transitions: Tensor
    shuffle: Tensor
    words: list[str]

    @classmethod
    def make(cls, words: int = 48, concentration: float = 0.08, end: float = 0.12, seed: int = 0) -> "MarkovLanguage":
        """A random chain: successors ~ Dirichlet(``concentration``), EOS with probability
        ``end`` after any word (about ``1 / end`` words a sentence), never right after BOS."""
        if words < 2 or words > len(_SYLLABLES) ** 2 or not 0 < end < 1 or concentration <= 0:
            raise ValueError(f"need 2 <= words <= {len(_SYLLABLES) ** 2}, 0 < end < 1, concentration > 0")
        g = torch.Generator().manual_seed(seed)
        alpha = torch.full((words + 1, words), float(concentration), dtype=torch.float64)
        rows = torch._standard_gamma(alpha, generator=g).clamp_min(1e-300)
        rows = rows / rows.sum(-1, keepdim=True)
        ends = torch.full((words + 1, 1), end, dtype=torch.float64)
        ends[-1] = 0.0  # a sentence has at least one word
        transitions = torch.cat([rows * (1 - ends), ends], dim=-1)
        transitions = torch.cat([transitions[:-1], torch.zeros(1, words + 1, dtype=torch.float64),
                                 transitions[-1:]])  # rows: words, EOS (unused), BOS
        picks = torch.randperm(len(_SYLLABLES) ** 2, generator=g)[:words].tolist()
        names = [_SYLLABLES[i // len(_SYLLABLES)] + _SYLLABLES[i % len(_SYLLABLES)] for i in picks]
        return cls(transitions, torch.randperm(words, generator=g), names)

    @property
    def n_words(self) -> int:
        return len(self.words)

    @property
    def eos(self) -> int:
        return self.n_words

    @property
    def bos(self) -> int:
        return self.n_words + 1

    @property
    def pad(self) -> int:
        return self.n_words + 2

    @property
    def vocab_size(self) -> int:
        return self.n_words + 3

    def sample(self, n: int, generator: torch.Generator, max_words: int = 14) -> list[list[int]]:
        """``n`` sentences in the teacher's ids, each ending with EOS (forced after ``max_words``)."""
        sentences = []
        for _ in range(n):
            current, sentence = self.bos, []
            while len(sentence) < max_words:
                current = int(torch.multinomial(self.transitions[current], 1, generator=generator))
                sentence.append(current)
                if current == self.eos:
                    break
            if sentence[-1] != self.eos:
                sentence.append(self.eos)
            sentences.append(sentence)
        return sentences

    def text(self, sentence: list[int]) -> str:
        return " ".join(self.words[i] for i in sentence if i < self.n_words)

    def student_ids(self, sentence: list[int]) -> list[int]:
        return [int(self.shuffle[i]) if i < self.n_words else i for i in sentence]

    def true_distributions(self, input_ids: Tensor) -> Tensor:
        """``[B, T]`` teacher ids -> ``[B, T, V]`` the true next-token distributions (float64;
        zero on BOS and PAD; rows after EOS or PAD are EOS's, never read)."""
        rows = torch.zeros(self.vocab_size, self.vocab_size, dtype=torch.float64)
        rows[: self.n_words + 2, : self.n_words + 1] = self.transitions
        rows[self.eos, self.eos] = rows[self.pad, self.eos] = 1.0
        return rows[input_ids]

    def in_teacher_ids(self, values: Tensor) -> Tensor:
        """Re-index the last axis of ``values`` from the student's ids to the teacher's."""
        index = torch.arange(self.vocab_size)
        index[: self.n_words] = self.shuffle  # teacher word w is the student's id shuffle[w]
        return values[..., index]

    def batch(self, sentences: list[list[int]], student_ids: bool = False) -> tuple[Tensor, Tensor]:
        """``(input_ids, labels)`` ``[B, T]``: BOS then the sentence, PAD after; the labels
        are the input ids with BOS and PAD at -100."""
        rows = [[self.bos] + (self.student_ids(s) if student_ids else s) for s in sentences]
        length = max(map(len, rows))
        input_ids = torch.full((len(rows), length), self.pad)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
        labels = input_ids.masked_fill((input_ids == self.bos) | (input_ids == self.pad), -100)
        return input_ids, labels

    def tokenizer(self, order: str = "teacher"):
        """A word-level ``transformers`` tokenizer of this language, in the teacher's ids or
        the student's (``order="student"``)."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        if order not in ("teacher", "student"):
            raise ValueError(f"order must be 'teacher' or 'student', got {order!r}")
        ids = self.shuffle.tolist() if order == "student" else range(self.n_words)
        vocab = {word: int(i) for word, i in zip(self.words, ids)}
        vocab.update({"</s>": self.eos, "<s>": self.bos, "<pad>": self.pad})
        core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", bos_token="<s>", pad_token="<pad>",
                                       name_or_path=f"markov-{order}")


def tiny_student(language: MarkovLanguage, seed: int, width: int = 64, layers: int = 2):
    """A small GPT-2 for ``language`` (no dropout), the same initial weights for a given seed."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=language.vocab_size, n_positions=32, n_embd=width, n_layer=layers, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=language.bos,
                        eos_token_id=language.eos, pad_token_id=language.pad)
    return GPT2LMHeadModel(config)


def train_student(language: MarkovLanguage, sentences: list[list[int]], method: str, seed: int = 0,
                  steps: int = 300, batch_size: int = 16, learning_rate: float = 3e-3,
                  distillation_weight: float = 1.5):
    """Train a fresh `tiny_student` on ``sentences`` with one of `METHODS`:

    - ``seqkd``: cross-entropy on the sentences (the teacher's samples) alone;
    - ``uld``: plus ``distillation_weight`` x ULD against the true distributions (student on
      the shuffled ids); ``uld_alone``: ULD without the cross-entropy;
    - ``hybrid``: plus the hybrid loss (generalized KL on the tokens both tokenizers write
      alike, found by `uld.alignment.shared_vocabulary`, sorted ULD on the rest);
    - ``kl``: plus token-level KL, the student on the teacher's own ids (the control).
    """
    from uld.alignment import shared_vocabulary
    from uld.loss import TokenKLLoss, ULDLoss

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not sentences or steps < 1 or batch_size < 1:
        raise ValueError("need at least one sentence, steps >= 1 and batch_size >= 1")
    shuffled = method != "kl"
    loss_fn = {
        "seqkd": ULDLoss(distillation_weight=0.0),
        "uld": ULDLoss(distillation_weight=distillation_weight),
        "uld_alone": ULDLoss(distillation_weight=distillation_weight, crossentropy_weight=0.0),
        "hybrid": ULDLoss(distillation_weight=distillation_weight, unmatched_weight=1.0,
                          shared_vocabulary=shared_vocabulary(language.tokenizer("student"), language.tokenizer())),
        "kl": TokenKLLoss(distillation_weight=distillation_weight),
    }[method]
    model = tiny_student(language, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    order = torch.Generator().manual_seed(seed)
    schedule = torch.randperm(len(sentences), generator=order).tolist()
    while len(schedule) < steps * batch_size:
        schedule += torch.randperm(len(sentences), generator=order).tolist()
    for step in range(steps):
        chosen = [sentences[i] for i in schedule[step * batch_size:(step + 1) * batch_size]]
        teacher_ids, teacher_labels = language.batch(chosen)
        input_ids, labels = language.batch(chosen, student_ids=shuffled)
        teacher_logits = language.true_distributions(teacher_ids).float().log()
        logits = model(input_ids=input_ids, attention_mask=(input_ids != language.pad).long()).logits
        loss = loss_fn(logits, teacher_logits, labels, teacher_labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        optimizer.param_groups[0]["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
    return model.eval()


@torch.no_grad()
def evaluate_student(model, language: MarkovLanguage, sentences: list[list[int]], shuffled: bool) -> dict:
    """Per sentence (lists of floats), over its predicted positions, the student's next-token
    distribution against the truth, read in the teacher's ids:

    - ``kl``: mean ``KL(truth || student)`` in nats;
    - ``top1``: share of positions where the two most likely tokens agree (%);
    - ``sorted_l1``: mean ULD distance (sorted L1), what ULD alone can see;
    - ``entropy_gap``: mean ``|H(student) - H(truth)|`` in nats.
    """
    from uld.distance import uld_distance

    input_ids, labels = language.batch(sentences, student_ids=shuffled)
    teacher_ids, _ = language.batch(sentences)
    logits = model(input_ids=input_ids, attention_mask=(input_ids != language.pad).long()).logits.double()
    student = language.in_teacher_ids(logits.softmax(-1)) if shuffled else logits.softmax(-1)
    truth = language.true_distributions(teacher_ids)
    predicted = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], 1) != -100
    kl = (torch.special.xlogy(truth, truth) - torch.special.xlogy(truth, student)).sum(-1)
    top1 = (truth.argmax(-1) == student.argmax(-1)).double() * 100
    sorted_l1 = uld_distance(student, truth)
    entropy = (-torch.special.xlogy(student, student).sum(-1) + torch.special.xlogy(truth, truth).sum(-1)).abs()
    count = predicted.sum(-1).double()

    def per_sentence(values: Tensor) -> list[float]:
        return ((values * predicted).sum(-1) / count).tolist()

    return {"kl": per_sentence(kl), "top1": per_sentence(top1), "sorted_l1": per_sentence(sorted_l1),
            "entropy_gap": per_sentence(entropy)}
