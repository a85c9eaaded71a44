"""The label grid (ecgka.labels): the half-way rule on every grid value and its one-ulp neighbours in float32
and float64, numpy = torch, the shot rule and its cut-offs, the typed config and the manifest round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from ecgka.data.config import BuildConfig
from ecgka.labels import LabelGrid, LabelGridConfig, ShotRule

GRIDS = {"potassium": LabelGrid.preset("potassium"), "age": LabelGrid.preset("age")}
DTYPES = (np.float32, np.float64)


def _ulp_neighbours(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The next representable value below and above each value, in its own dtype."""
    return (np.nextafter(values, np.array(-np.inf, values.dtype)),
            np.nextafter(values, np.array(np.inf, values.dtype)))


def _grid_values(grid: LabelGrid, dtype) -> np.ndarray:
    return grid.centres.astype(dtype)


def _half_way_values(grid: LabelGrid, dtype) -> np.ndarray:
    return (grid.centres + grid.step / 2).astype(dtype)


def test_presets_are_the_documented_grids():
    k, age = GRIDS["potassium"], GRIDS["age"]
    assert (k.lo, k.hi, k.step, k.n_bins, k.shots.rule) == (1.5, 10.0, 0.1, 86, "relative")
    assert (age.lo, age.hi, age.step, age.n_bins, age.shots.rule) == (0.0, 120.0, 1.0, 121, "absolute")
    np.testing.assert_array_equal(k.centres[[0, 20, 85]], [1.5, 3.5, 10.0])


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_grid_value_and_its_ulp_neighbours_land_in_its_bin(name, dtype):
    grid = GRIDS[name]
    values = _grid_values(grid, dtype)
    expected = np.arange(grid.n_bins)
    below, above = _ulp_neighbours(values)
    for v in (values, below, above):
        assert v.dtype == dtype
        np.testing.assert_array_equal(grid.bin_index(v), expected)


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_half_way_values_and_their_ulp_neighbours_land_in_the_upper_bin(name, dtype):
    grid = GRIDS[name]
    values = _half_way_values(grid, dtype)
    upper = np.arange(grid.n_bins) + 1  # the last one lies above hi: one past the grid
    below, above = _ulp_neighbours(values)
    for v in (values, below, above):
        np.testing.assert_array_equal(grid.bin_index(v), upper)
    np.testing.assert_array_equal(grid.clipped_index(values), np.minimum(upper, grid.n_bins - 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_issue_examples(dtype):
    grid = GRIDS["potassium"]
    values = np.array([3.45, 3.55], dtype)
    np.testing.assert_allclose(grid.centre(grid.bin_index(values)), [3.5, 3.6])
    assert grid.bin_index(np.array([3.4499, 3.5499], dtype)).tolist() == [19, 20]


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_torch_bins_equal_numpy(name, dtype):
    grid = GRIDS[name]
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    grid_values, half_way = _grid_values(grid, np_dtype), _half_way_values(grid, np_dtype)
    values = np.concatenate([grid_values, *_ulp_neighbours(grid_values), half_way, *_ulp_neighbours(half_way),
                             np.linspace(grid.lo - grid.step, grid.hi + grid.step, 997).astype(np_dtype)])
    tensor = torch.from_numpy(values)
    assert tensor.dtype == dtype
    np.testing.assert_array_equal(grid.bin_index_torch(tensor).numpy(), grid.bin_index(values))
    np.testing.assert_array_equal(grid.clipped_index_torch(tensor).numpy(), grid.clipped_index(values))


def test_counts_and_out_of_grid_labels():
    grid = GRIDS["potassium"]
    counts = grid.counts(np.array([1.5, 1.54, 1.55, 10.0], np.float32))
    assert len(counts) == 86 and counts[0] == 2 and counts[1] == 1 and counts[85] == 1
    with pytest.raises(Exception, match="outside the label grid"):
        grid.counts([12.0])


def test_relative_shot_rule_cut_offs():
    # n_max 100: many > 50, few < 15, the boundaries 50 and 15 are median; empty bins are not listed
    rule = ShotRule()
    assert (rule.many, rule.few) == (0.5, 0.15)
    counts = [0, 100, 51, 50, 15, 14, 1, 0]
    assert rule.groups(counts) == {"many": [1, 2], "median": [3, 4], "few": [5, 6]}
    assert rule.group_of_counts(counts).tolist() == ["few", "many", "many", "median", "median", "few", "few", "few"]
    assert rule.thresholds(100) == (50.0, 15.0)


def test_absolute_shot_rule_cut_offs():
    rule = ShotRule(rule="absolute")
    assert (rule.many, rule.few) == (100.0, 20.0)
    counts = [0, 1000, 101, 100, 20, 19]
    assert rule.groups(counts) == {"many": [1, 2], "median": [3, 4], "few": [5]}
    assert GRIDS["age"].shot_groups(counts) == rule.groups(counts)


def test_explicit_cut_offs_and_their_order():
    assert ShotRule(rule="relative", many=0.4).groups([100, 41, 40]) == {"many": [0, 1], "median": [2], "few": []}
    with pytest.raises(ValidationError, match="must not exceed"):
        ShotRule(many=0.1, few=0.2)


def test_assign_groups_uses_the_bin_of_each_label():
    grid = GRIDS["potassium"]
    train = np.zeros(grid.n_bins, int)
    train[[25, 26, 40]] = [100, 30, 5]
    labels = np.array([4.0, 4.05, 4.1, 5.5, 9.0], np.float32)  # bins 25, 26 (half-way up), 26, 40, 75
    assert grid.assign_groups(labels, train).tolist() == ["many", "median", "median", "few", "few"]


def test_label_grid_config_forms():
    assert LabelGridConfig.model_validate("age").grid == GRIDS["age"]
    assert LabelGridConfig.model_validate({"preset": "age", "hi": 100}).grid.n_bins == 101
    mapping = {"name": "sodium", "unit": "mmol/L", "lo": 100, "hi": 180, "step": 0.5, "shots": {"rule": "absolute"}}
    grid = LabelGridConfig.model_validate(mapping).grid
    assert (grid.name, grid.n_bins, grid.shots.many, grid.shots.few) == ("sodium", 161, 100.0, 20.0)
    assert BuildConfig.model_validate(yaml.safe_load("label: age")).label.grid == GRIDS["age"]
    assert BuildConfig().label.grid == GRIDS["potassium"]


@pytest.mark.parametrize("bad, message", [
    ("weight", "unknown label preset 'weight'"),
    ({"preset": "height"}, "unknown label preset 'height'"),
    ({"lo": 0.0, "hi": 1.05, "step": 0.1}, "not a whole number of steps"),
    ({"lo": 5.0, "hi": 5.0}, "must be below"),
    ({"lo": 1.5, "hi": 10.0, "step": 0.1, "typo": 1}, "typo"),
])
def test_label_grid_config_rejects(bad, message):
    with pytest.raises(ValidationError, match=message):
        LabelGridConfig.model_validate(bad)


def test_build_config_label_must_cover_the_lab_range():
    with pytest.raises(ValidationError, match="must cover labs.lo/hi"):
        BuildConfig.model_validate({"label": {"lo": 2.0}})


@pytest.mark.parametrize("name", GRIDS)
def test_manifest_round_trip(name):
    grid = GRIDS[name]
    block = grid.to_dict()
    assert block["n_bins"] == grid.n_bins and block["half_way"] == "up"
    assert LabelGrid.from_manifest({"label": block}) == grid
    assert LabelGrid.from_manifest(yaml.safe_load(yaml.safe_dump({"label": block}))) == grid
    other = ShotRule(rule="absolute", many=10, few=2)
    assert LabelGrid.from_manifest({"label": block}, shots=other).shots == other


def test_from_manifest_without_label_block_asks_for_a_rebuild():
    with pytest.raises(Exception, match="rebuild"):
        LabelGrid.from_manifest({"label": {"lo": 1.5, "hi": 10.0, "bin_width": 0.1}})
    with pytest.raises(Exception, match="rebuild"):
        LabelGrid.from_manifest({})
