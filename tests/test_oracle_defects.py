"""Issue 21: ConR's released form with column weights (a case computed by the released function), ConR in
label units without a grid (float32 and float64 labels alike), FDS under a float64 default dtype."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ecgka.labels import LabelGrid
from ecgka.losses.conr import conr_loss
from ecgka.losses.fds import FDS

POTASSIUM = LabelGrid(1.5, 10.0, 0.1)


# ---------------------------------------------------------------- ConR, released form, weights by shape


@pytest.fixture(scope="module")
def column_case(shared_dir):
    return json.loads((shared_dir / "reference" / "conr-column-weights-case.json").read_text())


def case_tensors(case):
    inputs = case["inputs"]
    return [torch.tensor(inputs[k], dtype=torch.float32) for k in ("features", "targets", "preds", "weights")]


def test_conr_released_with_column_weights_matches_the_released_function(column_case):
    features, targets, preds, weights = case_tensors(column_case)
    assert weights.shape == (16, 1)  # as the released training code passes them
    value = conr_loss(features, targets, preds, w=1, weights=weights, t=0.07, e=0.01, form="released")
    expected = column_case["expected"]
    assert math.isclose(value.item(), expected["loss"], rel_tol=expected["rtol"])  # 2.925061, was 3.505235


def test_conr_released_weights_by_shape(column_case):
    """[N, 1]: anchor's weight, weighted mean; [N]: negative's weight, mean(w) * mean(loss); scalar: w * loss."""
    features, targets, preds, weights = case_tensors(column_case)

    def released(x):
        return conr_loss(features, targets, preds, w=1, weights=x, t=0.07, e=0.01, form="released").item()

    vector = released(weights.reshape(-1))
    assert math.isclose(vector, column_case["for_comparison"]["N x N broadcast in the final mean"], rel_tol=1e-5)
    assert not math.isclose(vector, released(weights), rel_tol=1e-3)
    # all-equal weights: the three shapes agree (the scalar also sits in every push weight)
    scalar = released(2.5)
    assert not math.isclose(scalar, 2.5 * released(1.0), rel_tol=1e-4)
    for x in (torch.full((16,), 2.5), torch.full((16, 1), 2.5)):
        assert math.isclose(released(x), scalar, rel_tol=1e-6)
    # the clean form does not depend on the shape
    clean = [conr_loss(features, targets, preds, w=1, weights=x) for x in (weights, weights.reshape(-1))]
    torch.testing.assert_close(clean[0], clean[1])


# ---------------------------------------------------------------- ConR in label units (no grid)


def potassium_case(dtype, seed=0):
    """Every 0.1 grid value twice; predictions one step off in alternating directions."""
    centres = torch.tensor(POTASSIUM.centres, dtype=torch.float64)
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(len(centres))[: len(centres)]
    targets, preds = centres.repeat(2), (centres + sign * POTASSIUM.step).repeat(2)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(targets), 4, generator=g, dtype=torch.float64), targets.to(dtype), preds.to(dtype)


def test_conr_in_label_units_is_the_same_for_float32_and_float64_labels():
    features, t64, p64 = potassium_case(torch.float64)
    _, t32, p32 = potassium_case(torch.float32)
    value64 = conr_loss(features, t64, p64, w=0.1, e=0.1)
    value32 = conr_loss(features, t32, p32, w=0.1, e=0.1)
    assert value64.item() != 0.0
    torch.testing.assert_close(value32, value64, rtol=1e-6, atol=0)  # was 1.527 against 1.395
    # in label units it is the grid's result: w = 1 bin of 0.1, e = 0.01 per bin = 0.1 per mmol/L
    torch.testing.assert_close(value64, conr_loss(features, t64, p64, w=1, e=0.01, grid=POTASSIUM),
                               rtol=1e-9, atol=0)


def test_conr_label_units_every_adjacent_pair_is_a_positive():
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for a, b in zip(POTASSIUM.centres[:-1], POTASSIUM.centres[1:], strict=True):
        for dtype in (torch.float32, torch.float64):
            targets = torch.tensor([a, b, a, b], dtype=dtype)
            preds = torch.tensor([a, a, a, a], dtype=dtype)  # all close: a non-positive pair would be a negative
            assert conr_loss(features, targets, preds, w=0.1).item() == 0.0, (a, b, dtype)


def test_conr_released_form_keeps_the_labels_dtype_in_label_units():
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = {}
    for dtype in (torch.float32, torch.float64):  # 1.7 - 1.6 > 0.1 in float32, <= 0.1 in float64
        targets = torch.tensor([1.6, 1.7, 1.6, 1.7], dtype=dtype)
        preds = torch.full((4,), 1.6, dtype=dtype)  # all close: a non-positive pair is a negative
        values[dtype] = conr_loss(features, targets, preds, w=0.1, form="released").item()
        assert conr_loss(features, targets, preds, w=0.1).item() == 0.0  # clean: positives in both dtypes
    assert values[torch.float32] != 0.0 and values[torch.float64] == 0.0


# ---------------------------------------------------------------- FDS under a float64 default dtype


def test_fds_follows_a_float64_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        fds = FDS(3, bucket_num=6, bucket_start=0)
        assert {b.dtype for b in fds.buffers()} == {torch.float64}
        labels = torch.arange(60) % 6
        for epoch in range(3):
            features = torch.randn(60, 3, generator=torch.Generator().manual_seed(epoch)) + labels[:, None]
            fds.update_last_epoch_stats(epoch)  # failed in conv1d: "expected scalar type Double but found Float"
            fds.update_running_stats(features, labels, epoch)
        out = fds.smooth(torch.randn(6, 3), torch.arange(6), 3)
        assert out.dtype == torch.float64 and torch.isfinite(out).all()
        assert {b.dtype for b in fds.buffers()} == {torch.float64}
        assert {b.dtype for b in fds.float().buffers()} == {torch.float32}  # .to(dtype) moves every buffer
    finally:
        torch.set_default_dtype(previous)
