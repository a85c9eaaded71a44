"""Baselines on tiny inputs: FDS statistics and schedule, RankSim, ConR, Balanced MSE (BMC, GAI, BNI)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ecgka.labels import LabelGrid
from ecgka.losses.balanced_mse import bmc_loss, bni_loss, gai_loss
from ecgka.losses.conr import conr_loss
from ecgka.losses.fds import FDS
from ecgka.losses.ranksim import TrueRanker, one_per_target, rank_normalised, ranksim_regularizer

# ---------------------------------------------------------------- FDS


def epoch_data(seed, n=60, buckets=6, dim=3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % buckets
    return torch.randn(n, dim, generator=g, dtype=torch.float64) * (1 + labels[:, None]) + labels[:, None], labels


def bucket_stats(features, labels, buckets=6):
    f, lab = features.numpy(), labels.numpy()
    return (np.stack([f[lab == b].mean(0) for b in range(buckets)]),
            np.stack([f[lab == b].var(0, ddof=1) for b in range(buckets)]))


def smoothed(stats, ks=5, sigma=2):
    from ecgka.losses import lds_kernel_window

    window = lds_kernel_window("gaussian", ks, sigma)
    window = window / window.sum()
    half = (ks - 1) // 2
    padded = np.pad(stats, ((half, half), (0, 0)), mode="reflect")
    return np.stack([(padded[b : b + ks] * window[:, None]).sum(0) for b in range(len(stats))])


def test_fds_buffers_are_named_as_released():
    names = dict(FDS(4, bucket_num=10, bucket_start=3).named_buffers())
    for name in ["running_mean", "running_var", "running_mean_last_epoch", "running_var_last_epoch",
                 "smoothed_mean_last_epoch", "smoothed_var_last_epoch", "num_samples_tracked"]:
        assert names[name].shape[0] == 7


@pytest.mark.parametrize("alias", [True, False])
def test_fds_statistics_schedule_and_calibration(alias):
    fds = FDS(3, bucket_num=6, bucket_start=0, alias_last_epoch=alias).double()
    f0, lab = epoch_data(0)
    f1, _ = epoch_data(1)
    fds.update_last_epoch_stats(0)  # no-op: epoch 0 is the first update epoch
    fds.update_running_stats(f0, lab, 0)  # factor 0 at start_update
    m0, v0 = bucket_stats(f0, lab)
    np.testing.assert_allclose(fds.running_mean.numpy(), m0, rtol=1e-6)
    np.testing.assert_allclose(fds.running_var.numpy(), v0, rtol=1e-6)
    z = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(fds.smooth(z, torch.arange(6), 1), z)  # identity in epoch 1, as released
    assert fds.smooth(z, torch.arange(6), 0) is z  # before start_smooth
    fds.update_last_epoch_stats(1)
    fds.update_running_stats(f1, lab, 1)
    m1, v1 = bucket_stats(f1, lab)
    live_m, live_v = 0.1 * m1 + 0.9 * m0, 0.1 * v1 + 0.9 * v0
    np.testing.assert_allclose(fds.running_mean.numpy(), live_m, rtol=1e-6)
    # released aliasing: "last epoch" running stats are the live ones; the smoothed ones are from epoch 0
    ref_m, ref_v = (live_m, live_v) if alias else (m0, v0)
    sm, sv = smoothed(m0), smoothed(v0)
    out = fds.smooth(z, torch.arange(6), 2)
    expected = (z.numpy() - ref_m) * np.sqrt(np.clip(sv / ref_v, 0.1, 10)) + sm
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)  # float32 kernel taps
    assert not torch.equal(out, z)
    fds.update_running_stats(f0, lab, 0)  # an older epoch is ignored
    np.testing.assert_allclose(fds.running_mean.numpy(), live_m, rtol=1e-6)


def test_fds_smooth_returns_a_new_tensor_and_is_differentiable():
    fds = FDS(3, bucket_num=6, bucket_start=1).double()
    f0, lab = epoch_data(0)
    for epoch in range(3):
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(epoch_data(epoch)[0], lab, epoch)
    z = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 5, 2])  # label 0 < bucket_start: lumped into bucket 1
    before = z.detach().clone()
    out = fds.smooth(z, labels, 3)
    assert torch.equal(z.detach(), before) and out is not z
    torch.testing.assert_close(out[0], fds.smooth(z, torch.tensor([1] * 8), 3)[0])
    assert torch.autograd.gradcheck(lambda x: fds.smooth(x, labels, 3), (z,))
    # without bucket_start in the batch the lower label is left alone (released rule)
    torch.testing.assert_close(fds.smooth(z, torch.tensor([0, 2, 3, 4, 5, 5, 2, 2]), 3)[0], z[0])


# ---------------------------------------------------------------- RankSim


def test_rank_normalised_by_hand_with_stable_ties():
    assert rank_normalised(torch.tensor([3.0, 1.0, 2.0])).tolist() == pytest.approx([1 / 3, 1, 2 / 3])
    assert rank_normalised(torch.tensor([1.0, 1.0, 0.0])).tolist() == pytest.approx([1 / 3, 2 / 3, 1])


def numpy_rank(row):
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))
    rank = np.empty(len(row))
    rank[order] = np.arange(len(row))
    return (rank + 1) / len(row)


def test_ranksim_matches_an_independent_transcription():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(7, 5, generator=g, dtype=torch.float64)
    targets = torch.tensor([4.0, 3.1, 5.5, 2.7, 6.0, 4.4, 3.9], dtype=torch.float64)
    x = features.numpy() / np.linalg.norm(features.numpy(), axis=1, keepdims=True)
    sims, y = x @ x.T, targets.numpy()
    expected = sum(np.mean((numpy_rank(sims[i]) - numpy_rank(-np.abs(y[i] - y))) ** 2) for i in range(7))
    assert math.isclose(ranksim_regularizer(features, targets).item(), expected, rel_tol=1e-12)


def test_ranksim_blackbox_gradient_rule():
    seq = torch.tensor([[0.3, 0.9, 0.1, 0.5]], dtype=torch.float64, requires_grad=True)
    grad_out = torch.tensor([[1.0, -0.2, 0.0, 0.3]], dtype=torch.float64)
    TrueRanker.apply(seq, 2.0).backward(grad_out)
    perturbed = numpy_rank((seq.detach() + 2.0 * grad_out)[0].numpy())
    expected = -(numpy_rank(seq.detach()[0].numpy()) - perturbed) / (2.0 + 1e-8)
    np.testing.assert_allclose(seq.grad[0].numpy(), expected)


def test_ranksim_keeps_one_sample_per_target_and_reaches_features():
    targets = torch.tensor([4.0, 4.0, 5.0, 5.0, 5.0, 3.0])
    picks = {tuple(sorted(one_per_target(targets, torch.Generator().manual_seed(s)).tolist())) for s in range(30)}
    for pick in picks:
        assert sorted(targets[list(pick)].tolist()) == [3.0, 4.0, 5.0]
    assert len(picks) > 1  # the pick is random (seeded)
    features = torch.randn(6, 4, requires_grad=True)
    ranksim_regularizer(features, targets).backward()
    assert torch.isfinite(features.grad).all()


# ---------------------------------------------------------------- ConR


def label_tol(values, w):
    """The clean form's label-unit tolerance without a grid: 8 float32 ulps at the values' magnitude."""
    return 8 * float(np.finfo(np.float32).eps) * max(float(np.abs(np.asarray(values, np.float64)).max()), w)


def conr_by_loops(features, targets, preds, w, weights, t, e, tol=False):
    f = features.numpy() / np.linalg.norm(features.numpy(), axis=1, keepdims=True)
    s, y, p, n = f @ f.T / t, targets.numpy(), preds.numpy(), len(targets)
    y_tol, p_tol = (label_tol(y, w), label_tol(p, w)) if tol else (0.0, 0.0)
    losses = []
    for i in range(n):
        pos = [j for j in range(n) if j != i and abs(y[i] - y[j]) <= w + y_tol]
        neg = [j for j in range(n) if abs(y[i] - y[j]) > w + y_tol and abs(p[i] - p[j]) <= w + p_tol]
        if not pos or not neg:
            losses.append(0.0)
            continue
        denom = sum(math.exp(s[i, j]) for j in pos)
        denom += sum(weights[i] * math.exp(e * abs(y[i] - y[j])) * math.exp(s[i, j]) for j in neg)
        losses.append(np.mean([-math.log(math.exp(s[i, j]) / denom) for j in pos]))
    return float(np.mean(np.asarray(weights) * np.asarray(losses)))


def conr_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    targets = torch.tensor([4.0, 4.1, 4.5, 3.2, 4.0, 4.1, 4.5, 3.2], dtype=torch.float64)  # two views
    preds = torch.tensor([4.2, 4.2, 4.25, 4.3, 4.2, 4.15, 4.3, 4.1], dtype=torch.float64)
    return torch.randn(8, 5, generator=g, dtype=torch.float64), targets, preds


def test_conr_matches_an_independent_transcription():
    features, targets, preds = conr_inputs()
    weights = np.linspace(0.5, 2.0, 8)
    value = conr_loss(features, targets, preds, w=0.1, weights=torch.tensor(weights), t=0.07, e=0.1)
    expected = conr_by_loops(features, targets, preds, 0.1, weights, 0.07, 0.1, tol=True)
    assert math.isclose(value.item(), expected, rel_tol=1e-10)
    default = conr_loss(features, targets, preds, w=0.1, t=0.07, e=0.1)
    assert math.isclose(default.item(), conr_by_loops(features, targets, preds, 0.1, np.ones(8), 0.07, 0.1,
                                                      tol=True), rel_tol=1e-10)


def test_conr_without_negatives_is_zero_and_gradcheck():
    features, targets, _ = conr_inputs()
    far = torch.arange(8, dtype=torch.float64) * 10  # no prediction within w of another
    assert conr_loss(features, targets, far, w=0.1).item() == 0.0
    _, _, preds = conr_inputs()
    x = features.clone().requires_grad_(True)
    for form in ("clean", "released"):
        assert torch.autograd.gradcheck(
            lambda f, form=form: conr_loss(f, targets, preds, w=0.1, t=0.5, e=0.1, form=form), (x,))


# ---------------------------------------------------------------- Balanced MSE


def test_bmc_at_batch_one_is_zero_and_by_hand():
    assert bmc_loss(torch.tensor([3.0]), torch.tensor([5.0]), torch.tensor(1.0)).item() == 0.0
    # pred (0, 1), target (0, 2), noise_var 1: logits rows (0, -2) and (-0.5, -0.5)
    value = bmc_loss(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 2.0]), torch.tensor(1.0))
    assert math.isclose(value.item(), 2 * (math.log(1 + math.exp(-2)) + math.log(2)) / 2, rel_tol=1e-6)


def test_gai_is_the_balanced_likelihood():
    pred, target = torch.tensor([3.0, 4.5, 6.0], dtype=torch.float64), torch.tensor([3.5, 4.0, 7.0],
                                                                                    dtype=torch.float64)
    means, variances, weights = (torch.tensor(v, dtype=torch.float64) for v in ([4.0, 6.0], [0.3, 1.0], [0.7, 0.3]))
    s2 = torch.tensor(0.5, dtype=torch.float64)
    p, y = pred.numpy(), target.numpy()
    nll = -norm.logpdf(y, p, math.sqrt(0.5))
    prior = np.log(sum(wk * norm.pdf(p, mk, math.sqrt(vk + 0.5)) for mk, vk, wk in zip(
        [4.0, 6.0], [0.3, 1.0], [0.7, 0.3], strict=True)))
    expected = (2 * 0.5 * (nll + prior)).mean()
    assert math.isclose(gai_loss(pred, target, means, variances, weights, s2).item(), expected, rel_tol=1e-12)


def test_bni_is_the_balanced_likelihood():
    pred, target = torch.tensor([3.0, 4.5], dtype=torch.float64), torch.tensor([3.5, 4.0], dtype=torch.float64)
    centers, freq = torch.tensor([3.0, 4.0, 5.0], dtype=torch.float64), torch.tensor([0.2, 0.5, 0.3],
                                                                                      dtype=torch.float64)
    p, y, sd = pred.numpy(), target.numpy(), math.sqrt(0.8)
    prior = np.log(sum(f * norm.pdf(p, c, sd) for c, f in zip([3.0, 4.0, 5.0], [0.2, 0.5, 0.3], strict=True)))
    expected = (2 * 0.8 * (-norm.logpdf(y, p, sd) + prior)).mean()
    value = bni_loss(pred, target, torch.tensor(0.8, dtype=torch.float64), centers, freq)
    assert math.isclose(value.item(), expected, rel_tol=1e-12)


def test_gradcheck_balanced_mse():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_(True)
    target = torch.randn(5, generator=g, dtype=torch.float64)
    s2 = torch.tensor(0.7, dtype=torch.float64)
    gmm = [torch.tensor(v, dtype=torch.float64) for v in ([0.0, 1.0], [0.5, 0.2], [0.6, 0.4])]
    assert torch.autograd.gradcheck(lambda p: bmc_loss(p, target, s2), (pred,))
    assert torch.autograd.gradcheck(lambda p: gai_loss(p, target, *gmm, s2), (pred,))
    assert torch.autograd.gradcheck(lambda p: bni_loss(p, target, s2, gmm[0], gmm[2]), (pred,))


# ---------------------------------------------------------------- ConR: released form, grid semantics


def conr_released_by_loops(features, targets, preds, w, weights, t, e):
    """The facts sheet's description of the released function, loop by loop, in the labels' own dtype."""
    f = features.numpy() / np.linalg.norm(features.numpy(), axis=1, keepdims=True)
    s, y, n = f @ f.T / t, targets.numpy(), len(targets)
    p, w_y = preds.numpy().astype(y.dtype), y.dtype.type(w)
    vector, column = np.ndim(weights) > 0, np.ndim(weights) == 2  # column [N, 1]: the anchor's weight
    wt = np.asarray(weights, dtype=np.float64).reshape(-1) if vector else np.full(n, float(weights))
    per_anchor = []
    for i in range(n):
        pos = [j for j in range(n) if j != i and abs(y[i] - y[j]) <= w_y]
        neg = [j for j in range(n) if abs(y[i] - y[j]) > w_y and abs(p[i] - p[j]) <= w_y]
        if not neg or not pos:
            per_anchor.append(0.0)
            continue
        denom = sum(math.exp(s[i, j] if j in pos else 0.0) for j in range(n))  # non-positives add exp(0)
        push = wt[i] if column else None  # a column pushes with the anchor's weight, a vector with j's
        denom += sum((push if column else wt[j]) * math.exp(e * float(abs(y[i] - y[j]))) * math.exp(s[i, j])
                     for j in neg)
        per_anchor.append(np.mean([-math.log(math.exp(s[i, j]) / denom) for j in pos]))
    if column:  # (weights [N, 1] * per_anchor [N, 1]).mean(): the weighted mean
        return float(np.mean(wt * np.asarray(per_anchor)))
    return float(np.mean(wt)) * float(np.mean(per_anchor))  # (weights * per_anchor[:, None]).mean()


def random_conr_case(seed, n_half=10):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(30, 40, (n_half,), generator=g).to(torch.float64) / 10  # potassium-like, 0.1 grid
    targets = y.repeat(2)
    preds = targets + 0.15 * torch.randn(2 * n_half, generator=g, dtype=torch.float64)
    return torch.randn(2 * n_half, 5, generator=g, dtype=torch.float64), targets, preds


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", ["scalar", "vector", "column"])
def test_conr_released_form_matches_the_facts_sheet_transcription(seed, shape):
    features, targets, preds = random_conr_case(seed)
    vector = shape != "scalar"
    weights = torch.linspace(0.5, 2.0, 20, dtype=torch.float64) if vector else 1.7
    weights = weights[:, None] if shape == "column" else weights
    value = conr_loss(features, targets, preds, w=0.25, weights=weights, t=0.1, e=0.3, form="released")
    expected = conr_released_by_loops(features, targets, preds, 0.25, weights, 0.1, 0.3)
    assert expected != 0.0 and math.isclose(value.item(), expected, rel_tol=1e-10)
    clean = conr_loss(features, targets, preds, w=0.25, weights=weights, t=0.1, e=0.3)
    wv = weights.numpy().reshape(-1) if vector else np.full(20, weights)
    assert math.isclose(clean.item(), conr_by_loops(features, targets, preds, 0.25, wv, 0.1, 0.3, tol=True),
                        rel_tol=1e-10)
    assert not math.isclose(clean.item(), value.item(), rel_tol=1e-6)  # the quirks change the number


def test_conr_released_form_with_anchors_without_negatives():
    features, targets, _ = random_conr_case(7)
    far = torch.arange(20, dtype=torch.float64) * 10  # no negatives anywhere
    assert conr_loss(features, targets, far, w=0.25, form="released").item() == 0.0
    preds = targets.clone()
    preds[:2] = torch.tensor([3.0, 9.0], dtype=torch.float64)  # some anchors with, some without negatives
    weights = torch.rand(20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    value = conr_loss(features, targets, preds, w=0.05, weights=weights, t=0.2, e=0.1, form="released")
    assert math.isclose(value.item(), conr_released_by_loops(features, targets, preds, 0.05, weights, 0.2, 0.1),
                        rel_tol=1e-10)


def test_conr_weights_shape_is_checked():
    features, targets, preds = random_conr_case(0)
    column = torch.linspace(0.5, 2.0, 20, dtype=torch.float64)
    flat = conr_loss(features, targets, preds, w=0.25, weights=column)
    torch.testing.assert_close(conr_loss(features, targets, preds, w=0.25, weights=column[:, None]), flat)
    released = [conr_loss(features, targets, preds, w=0.25, weights=x, form="released") for x in (column, column[:, None])]
    assert not math.isclose(released[0].item(), released[1].item(), rel_tol=1e-6)  # released: the shape decides
    for form in ("clean", "released"):
        for bad in (column[None, :], column[:5], column[:, None].repeat(1, 2)):
            with pytest.raises(ValueError, match=r"weights must have the batch's shape \[20\]"):
                conr_loss(features, targets, preds, w=0.25, weights=bad, form=form)


POTASSIUM = LabelGrid(1.5, 10.0, 0.1)


def grid_case(grid, dtype, seed=0):
    """Every grid value twice (two views); predictions one step off in alternating directions."""
    centres = torch.tensor(grid.centres, dtype=torch.float64)
    sign = torch.tensor([1.0, -1.0]).repeat(len(centres))[: len(centres)].to(torch.float64)
    targets = centres.repeat(2)
    preds = (centres + sign * grid.step).repeat(2)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(targets), 4, generator=g, dtype=torch.float64), targets.to(dtype), preds.to(dtype)


@pytest.mark.parametrize("grid", [POTASSIUM, LabelGrid(0, 120, 1)], ids=["potassium", "ages"])
def test_conr_on_the_grid_is_the_same_for_float32_and_float64_labels(grid):
    features, t64, p64 = grid_case(grid, torch.float64)
    _, t32, p32 = grid_case(grid, torch.float32)
    value64 = conr_loss(features, t64, p64, w=1, e=0.01, grid=grid)
    value32 = conr_loss(features, t32, p32, w=1, e=0.01, grid=grid)
    assert value64.item() != 0.0
    torch.testing.assert_close(value32, value64, rtol=0, atol=0)
    # == the clean formula on integer bins: every adjacent pair is a positive, predictions one step apart close
    bins = torch.arange(grid.n_bins, dtype=torch.float64).repeat(2)
    pred_bins = torch.round((p64 - grid.lo) / grid.step)
    expected = conr_by_loops(features, bins, pred_bins, 1, np.ones(len(bins)), 0.07, 0.01)
    assert math.isclose(value64.item(), expected, rel_tol=1e-10)


def test_conr_every_adjacent_potassium_pair_is_a_positive_in_both_dtypes():
    centres = POTASSIUM.centres
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for a, b in zip(centres[:-1], centres[1:], strict=True):
        values = {}
        for dtype in (torch.float32, torch.float64):
            targets = torch.tensor([a, b, a, b], dtype=dtype)
            preds = torch.tensor([a, b, a, b], dtype=dtype)  # a and b: positives, so no negatives at all
            values[dtype] = conr_loss(features, targets, preds, w=1, grid=POTASSIUM).item()
            far = torch.tensor([a, a + 0.2, a, a + 0.2], dtype=dtype)  # two bins apart: negatives if preds close
            values[(dtype, "far")] = conr_loss(features, far, preds, w=1, grid=POTASSIUM).item()
        assert values[torch.float32] == values[torch.float64] == 0.0, (a, b)
        assert values[(torch.float32, "far")] == values[(torch.float64, "far")] != 0.0, (a, b)


def test_conr_released_form_keeps_the_float32_rounding_on_the_grid():
    """As released: 4.0/4.1 are positives in float32 but 1.5/1.6 are not (|dy| > w by rounding)."""
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for a, b, positive in ((4.0, 4.1, True), (1.5, 1.6, False), (2.1, 2.2, False)):
        targets = torch.tensor([a, b, a, b], dtype=torch.float32)
        preds = torch.full((4,), a, dtype=torch.float32)  # all close: a non-positive pair is a negative
        value = conr_loss(features, targets, preds, w=1, grid=POTASSIUM, form="released")
        expected = conr_released_by_loops(features, targets, preds, 0.1, 1.0, 0.07, 0.1)
        assert math.isclose(value.item(), expected, rel_tol=1e-6)
        assert (value.item() == 0.0) == positive  # a positive pair leaves no negative: loss 0


def test_balanced_mse_targets_must_have_the_batch_shape():
    pred, target = torch.tensor([3.0, 4.0, 5.0, 6.0]), torch.tensor([3.5, 4.0, 4.5, 7.0])
    var = torch.tensor(1.0)
    centres, freq = torch.tensor([3.0, 5.0, 7.0]), torch.tensor([0.2, 0.5, 0.3])
    for loss in (lambda p, y: bmc_loss(p, y, var), lambda p, y: bni_loss(p, y, var, centres, freq)):
        torch.testing.assert_close(loss(pred[:, None], target[:, None]), loss(pred, target))
        for bad in (target[:3], target[None, :], target[:, None].repeat(1, 2)):
            with pytest.raises(ValueError, match=r"target must have the batch's shape \[4\] or \[4, 1\]"):
                loss(pred, bad)
