"""Dist Loss: hand-computed values, weight alignment, the module (batch sizes, INV weights, gather)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecgka.errors import ConfigError
from ecgka.losses import DistLoss, dist_loss, inverse_frequency_weights, label_pmf, pseudo_labels

pytest.importorskip("torchsort")

RANGE = (1.5, 10.0, 0.1)


def potassium_labels(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.normal(4.2, 0.6, n), 1), 1.5, 10.0)


def t64(values):
    return torch.tensor(values, dtype=torch.float64)


def test_figure_2_distance():
    # Predictions [5, 2, 6, 3, 2, 7, 1] sort to [1, 2, 2, 3, 5, 6, 7]; pseudo-labels [1, 3, 3, 4, 4, 4, 6].
    pred, pseudo = t64([5, 2, 6, 3, 2, 7, 1]), [1, 3, 3, 4, 4, 4, 6]
    total, dist, sample = dist_loss(pred, pred.clone(), pseudo, sorter="soft", return_terms=True)
    assert math.isclose(dist.item(), (0 + 1 + 1 + 1 + 1 + 4 + 1) / 7, rel_tol=1e-12)
    assert sample.item() == 0.0 and math.isclose(total.item(), 9 / 7, rel_tol=1e-12)


@pytest.mark.parametrize("sorter", ["soft", "hard", "auto", "released"])
def test_hand_computed_l2_and_loss_weight(sorter):
    # sort(3, 1, 2) = (1, 2, 3) vs pseudo (1, 2, 2): 1/3; sample ((3-1)^2 + (1-2)^2 + (2-3)^2)/3 = 2.
    pred, target = t64([3, 1, 2]), t64([1, 2, 3])
    assert math.isclose(dist_loss(pred, target, [1, 2, 2], sorter=sorter).item(), 1 / 3 + 2, rel_tol=1e-12)
    value = dist_loss(pred.reshape(3, 1), target.reshape(3, 1), [1, 2, 2], sorter=sorter, loss_weight=2.0)
    assert math.isclose(value.item(), 2 / 3 + 2, rel_tol=1e-12)


def test_other_base_losses_by_hand():
    pred, target, pseudo = t64([0.0, 3.0]), t64([0.5, 1.0]), [0.0, 3.0]  # distribution term 0
    assert math.isclose(dist_loss(pred, target, pseudo, base="l1", sorter="hard").item(), (0.5 + 2) / 2)
    assert math.isclose(dist_loss(pred, target, pseudo, base="huber", sorter="hard").item(),
                        (0.5 * 0.25 + (2 - 0.5)) / 2)
    focal = [d * (2 / (1 + math.exp(-0.2 * d)) - 1) for d in (0.5, 2.0)]
    assert math.isclose(dist_loss(pred, target, pseudo, base="focal_l1", sorter="hard").item(), sum(focal) / 2,
                        rel_tol=1e-12)


def test_weight_alignment_pseudo_label_vs_batch_order():
    pred, target, pseudo = t64([3, 1, 2]), t64([3, 1, 2]), [1, 2, 4]  # sorted (1, 2, 3): errors (0, 0, 1)
    weights, pseudo_weights = t64([5, 6, 7]), t64([2, 3, 4])
    aligned = dist_loss(pred, target, pseudo, sorter="hard", weights=weights, pseudo_weights=pseudo_weights)
    released = dist_loss(pred, target, pseudo, sorter="hard", weights=weights, weight_alignment="batch_order")
    assert math.isclose(aligned.item(), 4 * 1 / 3)  # position 3 weighted by its pseudo-label's weight
    assert math.isclose(released.item(), 7 * 1 / 3)  # ... by batch sample 3's weight (the released defect)
    with pytest.raises(ConfigError, match="pseudo_weights"):
        dist_loss(pred, target, pseudo, weights=weights)


def test_sample_term_is_weighted_by_each_samples_weight():
    pred, target = t64([1, 2]), t64([0, 2])
    value = dist_loss(pred, target, [1, 2], sorter="hard", weights=t64([3, 1]), pseudo_weights=t64([1, 1]))
    assert math.isclose(value.item(), 3 * 1 / 2)


@pytest.mark.parametrize("sorter", ["soft", "hard", "auto"])
@pytest.mark.parametrize("base", ["l1", "l2", "focal_l1", "huber"])
def test_gradcheck_dist_loss(sorter, base):
    g = torch.Generator().manual_seed(0)
    pred = (4 + torch.randn(9, generator=g, dtype=torch.float64)).requires_grad_(True)
    target = 4 + torch.randn(9, generator=g, dtype=torch.float64)
    pseudo = torch.sort(4 + torch.randn(9, generator=g, dtype=torch.float64)).values
    weights, pseudo_weights = torch.rand(9, generator=g, dtype=torch.float64), torch.rand(9, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda p: dist_loss(p, target, pseudo, base=base, sorter=sorter, weights=weights,
                            pseudo_weights=pseudo_weights), (pred,))


def test_module_matches_function_with_inv_weights_and_pseudo_label_alignment():
    labels = potassium_labels()
    module = DistLoss(labels, RANGE, 32, sorter="hard").double()
    grid, pmf = label_pmf(labels, RANGE)
    pseudo = pseudo_labels(grid, pmf, 32)
    bins = np.rint((labels - 1.5) / 0.1).astype(int)
    per_sample = inverse_frequency_weights(bins, 86)
    table = np.zeros(86)
    table[bins] = per_sample
    batch = labels[:32]
    pred = torch.tensor(batch + np.random.default_rng(1).normal(0, 0.3, 32), requires_grad=True)
    weights = t64(table[np.rint((batch - 1.5) / 0.1).astype(int)])
    pseudo_w = t64(table[np.rint((pseudo - 1.5) / 0.1).astype(int)])
    expected = dist_loss(pred, t64(batch), pseudo, sorter="hard", weights=weights, pseudo_weights=pseudo_w)
    torch.testing.assert_close(module(pred, t64(batch)), expected, rtol=1e-6, atol=0)


def test_module_handles_a_last_batch_of_another_size():
    labels = potassium_labels()
    module = DistLoss(labels, RANGE, 64, sorter="auto")
    grid, pmf = label_pmf(labels, RANGE)
    for n in (64, 17, 64):
        pred = torch.full((n,), 4.0, requires_grad=True)
        loss = module(pred, torch.full((n,), 4.2))
        loss.backward()
        assert torch.isfinite(loss) and pred.grad.abs().sum() > 0
    assert sorted(module._pseudo) == [17, 64]
    np.testing.assert_array_equal(module.pseudo_for(17)[0], pseudo_labels(grid, pmf, 17))


def test_gather_sees_the_global_batch_and_keeps_local_gradients():
    labels = potassium_labels()
    other = torch.tensor(potassium_labels(16, seed=5), dtype=torch.float64)  # "rank 1" predictions

    def gather(x):
        return torch.cat([x, other.to(x.dtype) if x.requires_grad else other])

    local = torch.tensor(potassium_labels(16, seed=6), dtype=torch.float64, requires_grad=True)
    target = torch.tensor(potassium_labels(16, seed=7), dtype=torch.float64)
    module = DistLoss(labels, RANGE, 16, sorter="hard", reweight="none", gather=gather).double()
    dist = module.distribution(local, target)
    assert dist.shape == (32,)
    reference = DistLoss(labels, RANGE, 32, sorter="hard", reweight="none").double()
    torch.testing.assert_close(dist, reference.distribution(torch.cat([local, other]), torch.cat([target, other])))
    dist.mean().backward()
    assert local.grad.abs().sum() > 0


def test_unknown_options_fail_early():
    labels = potassium_labels(200)
    with pytest.raises(ConfigError, match=r"base: unknown value 'l3'; did you mean 'l2', 'l1'\? \(valid: l1, l2"):
        DistLoss(labels, RANGE, 8, base="l3")
    with pytest.raises(ConfigError, match=r"weight_alignment: unknown value 'sorted'.*valid: pseudo_label"):
        DistLoss(labels, RANGE, 8, weight_alignment="sorted")
    with pytest.raises(ValueError, match="pseudo-labels"):
        dist_loss(t64([1, 2, 3]), t64([1, 2, 3]), [1, 2])
