"""Sorters: soft (torchsort), hard, auto, and the released numpy design agree where they must.

Only the cases that call torchsort skip without it (``needs_torchsort``); the rest run everywhere.
"""

from __future__ import annotations

import pytest
import torch
from markers import needs_torchsort

from ecgka.errors import ConfigError
from ecgka.losses import sort_predictions
from ecgka.losses.sorting import released_soft_sort_numpy, soft_equals_hard


def values_and_grad(sorter, x, cotangent, eps):
    x = x.clone().requires_grad_(True)
    out = sort_predictions(x, sorter, eps)
    (out * cotangent).sum().backward()
    return out.detach(), x.grad


def close_inputs(n=64, seed=0):
    """Values whose sorted gaps are all below 1/eps = 10."""
    g = torch.Generator().manual_seed(seed)
    return 4 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)


def spread_inputs(n=64, seed=1):
    """Values with gaps well above 1/eps: the soft sort is no longer a sort."""
    g = torch.Generator().manual_seed(seed)
    return 40 * torch.randn(n, generator=g, dtype=torch.float64)


@needs_torchsort
@pytest.mark.parametrize("eps", [0.1, 0.15])
def test_soft_sort_equals_hard_sort_when_gaps_are_small(eps):
    x = close_inputs()
    hard = torch.sort(x).values
    assert soft_equals_hard(hard, eps)
    cot = torch.randn(len(x), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    soft_v, soft_g = values_and_grad("soft", x, cot, eps)
    hard_v, hard_g = values_and_grad("hard", x, cot, eps)
    torch.testing.assert_close(soft_v, hard_v, rtol=0, atol=1e-12)
    torch.testing.assert_close(soft_g, hard_g, rtol=0, atol=1e-12)


@needs_torchsort
def test_auto_picks_the_exact_sort_or_falls_back_to_torchsort():
    cot = torch.randn(64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for x in (close_inputs(), spread_inputs()):
        auto_v, auto_g = values_and_grad("auto", x, cot, 0.1)
        soft_v, soft_g = values_and_grad("soft", x, cot, 0.1)
        torch.testing.assert_close(auto_v, soft_v, rtol=0, atol=1e-10)
        torch.testing.assert_close(auto_g, soft_g, rtol=0, atol=1e-10)
    assert not soft_equals_hard(torch.sort(spread_inputs()).values, 0.1)
    hard = torch.sort(spread_inputs()).values
    assert (values_and_grad("soft", spread_inputs(), cot, 0.1)[0] - hard).abs().max() > 1e-3


@needs_torchsort
@pytest.mark.parametrize("make", [close_inputs, spread_inputs])
def test_released_numpy_design_equals_torchsort(make):
    x = make()
    cot = torch.randn(len(x), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rel_v, rel_g = values_and_grad("released", x, cot, 0.1)
    soft_v, soft_g = values_and_grad("soft", x, cot, 0.1)
    torch.testing.assert_close(rel_v, soft_v, rtol=0, atol=1e-10)
    torch.testing.assert_close(rel_g, soft_g, rtol=0, atol=1e-10)


def test_released_soft_sort_by_hand():
    # theta = (0, 3), eps = 1: rho/eps = (2, 1); w = sort_desc(-theta) = (0, -3); rho - w = (2, 4) violates
    # non-increasing -> pooled (3, 3); result -(rho - fit) = -((2, 1) - (3, 3)) = (1, 2): the two values are
    # pulled together by the regularisation (gap 3 > 1/eps = 1).
    values, perm, block = released_soft_sort_numpy(torch.tensor([0.0, 3.0]).numpy(), 1.0)
    assert values.tolist() == [1.0, 2.0]
    assert block.tolist() == [0, 0]


@pytest.mark.parametrize("sorter", ["soft", "hard", "auto", "released"])
@pytest.mark.parametrize("make", [close_inputs, spread_inputs])
def test_gradcheck_every_sorter(sorter, make):
    if needs_torchsort.args[0] and (sorter == "soft" or (sorter, make) == ("auto", spread_inputs)):
        pytest.skip("the soft sorter needs torchsort")  # auto falls back to it on spread inputs
    x = make(n=12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: sort_predictions(v, sorter, 0.1), (x,))


def test_unknown_sorter_and_bad_strength():
    with pytest.raises(ConfigError, match="did you mean 'soft'"):
        sort_predictions(torch.zeros(3), "sotf", 0.1)
    with pytest.raises(ConfigError, match="regularization_strength"):
        sort_predictions(torch.zeros(3), "soft", 0.0)
