"""Logits shaped like a language model's, for tests, benchmarks and notebooks.

>>> logits = lm_like_logits(3, 1000, generator=torch.Generator().manual_seed(0))
>>> logits.shape
torch.Size([3, 1000])
"""

from __future__ import annotations

import torch


def lm_like_logits(rows: int, vocab: int, exponents=(1.5, 2.5), noise: float = 0.5, generator=None) -> torch.Tensor:
    """``[rows, vocab]`` logits ``-s log(rank) + noise``: a Zipf head over a random token order.

    Each row draws its exponent ``s`` uniformly from ``exponents`` and its own token order.
    Exponents of 1.5 to 3 give next-token entropies of about 0.5 to 3 nats over 50k tokens,
    the range of trained language models; 1.1 gives about 6.5 nats, near an untrained one.
    """
    low, high = exponents
    if not 0 < low <= high:
        raise ValueError(f"exponents must satisfy 0 < low <= high, got {exponents!r}")
    log_rank = torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))
    exponent = low + (high - low) * torch.rand(rows, 1, generator=generator)
    order = torch.argsort(torch.rand(rows, vocab, generator=generator), dim=-1)
    logits = noise * torch.randn(rows, vocab, generator=generator)
    return logits - exponent * log_rank[order]
