"""The NumPy sort path against torch.sort."""

from __future__ import annotations

import pytest
import torch

from uld.sorting import sort_descending


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_torch_sort_values_and_gives_a_consistent_order(dtype, threads):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(7, 1001, generator=g).to(dtype).softmax(-1)
    values[0, :500] = 0.0  # ties
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sorted_values, none = sort_descending(values)
        again, order = sort_descending(values, with_order=True)
    finally:
        torch.set_num_threads(previous)
    expected = torch.sort(values, dim=-1, descending=True).values
    assert none is None
    assert sorted_values.dtype == dtype and torch.equal(sorted_values, expected) and torch.equal(again, expected)
    assert torch.equal(values.gather(-1, order), expected)
    assert torch.equal(order.sort(-1).values, torch.arange(1001).expand(7, -1))  # a permutation per row


def test_other_dtypes_and_shapes_fall_back_to_torch():
    values = torch.tensor([[0.25, 0.5, 0.25]], dtype=torch.bfloat16)
    sorted_values, order = sort_descending(values, with_order=True)
    assert sorted_values.dtype == torch.bfloat16 and sorted_values.tolist() == [[0.5, 0.25, 0.25]]
    assert order[0, 0].item() == 1
    assert sort_descending(torch.tensor([3.0, 1.0, 2.0]))[0].tolist() == [3.0, 2.0, 1.0]


def test_does_not_track_gradients():
    values = torch.rand(2, 5, requires_grad=True)
    assert not sort_descending(values)[0].requires_grad
