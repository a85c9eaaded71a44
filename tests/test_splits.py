"""Splits: subject-disjoint, balanced val/test per bin with a cap, deterministic; variants (bins: LabelGrid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgka.data.config import SplitConfig
from ecgka.data.splits import NOT_SELECTED, assign_splits, variant_selection
from ecgka.labels import LabelGrid

GRID = LabelGrid.preset("potassium")


def _meta(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    subjects = rng.integers(1, 2000, n)
    k = np.clip(np.round(rng.normal(4.2, 0.6, n), 1), 1.5, 10.0).astype(np.float32)
    return pd.DataFrame({"sample_id": np.arange(n) * 3 + 7, "subject_id": subjects, "potassium": k})


def test_disjoint_balanced_capped():
    meta = _meta()
    cfg = SplitConfig(per_bin_cap=20)
    split = assign_splits(meta, cfg, GRID)
    assert set(split) <= {"train", "val", "test", NOT_SELECTED}
    subj = {s: set(meta["subject_id"][split == s]) for s in ("train", "val", "test", NOT_SELECTED)}
    assert not subj["train"] & subj["val"] and not subj["train"] & subj["test"] and not subj["val"] & subj["test"]
    assert subj[NOT_SELECTED] <= subj["val"] | subj["test"]
    # one sample per held-out subject
    for s in ("val", "test"):
        assert meta["subject_id"][split == s].is_unique
    hv = GRID.counts(meta["potassium"][split == "val"])
    ht = GRID.counts(meta["potassium"][split == "test"])
    assert hv.max() == 20 and ht.max() == 20
    assert np.all(np.abs(hv - ht) <= 1)
    # common bins are full; every bin keeps at least half of its subjects (and samples' subjects) in train
    bins = GRID.bin_index(meta["potassium"])
    for b in np.unique(bins):
        in_bin = bins == b
        n_subj = meta["subject_id"][in_bin].nunique()
        assert meta["subject_id"][in_bin & (split == "train")].nunique() >= n_subj - n_subj // 2
        if n_subj >= 400:
            assert hv[b] == 20 and ht[b] == 20


def test_deterministic_and_seeded():
    meta = _meta()
    a = assign_splits(meta, SplitConfig(seed=1), GRID)
    b = assign_splits(meta.sample(frac=1, random_state=3), SplitConfig(seed=1), GRID)  # row order does not matter
    order = meta.sample(frac=1, random_state=3).index
    np.testing.assert_array_equal(a[order], b)
    c = assign_splits(meta, SplitConfig(seed=2), GRID)
    assert (a != c).any()


def test_holdout_fraction_one_takes_rare_bins():
    meta = pd.DataFrame({"sample_id": [0, 1, 2], "subject_id": [1, 2, 3], "potassium": [1.5, 1.5, 9.0]})
    split = assign_splits(meta, SplitConfig(holdout_max_fraction=1.0), GRID)
    assert sorted(split[:2]) == ["test", "val"] and split[2] == "val"
    split = assign_splits(meta, SplitConfig(holdout_max_fraction=0.5), GRID)
    assert sorted(split[:2]) == ["train", "val"] and split[2] == "train"


def test_split_bins_follow_the_half_way_rule():
    # 3.45 and 3.55 fall in different bins (3.5 and 3.6): two subjects, two bins, each held out alone
    meta = pd.DataFrame({"sample_id": [0, 1, 2, 3], "subject_id": [1, 2, 3, 4],
                         "potassium": np.array([3.45, 3.45, 3.55, 3.55], np.float32)})
    split = assign_splits(meta, SplitConfig(holdout_max_fraction=0.5), GRID)
    assert sorted(split[:2]) == ["train", "val"] and sorted(split[2:]) == ["train", "val"]


@pytest.mark.parametrize("ratio", [1, 5, 40])
def test_variant_ratio(ratio):
    meta = _meta(3000)
    y, ids = meta["potassium"].to_numpy(), meta["sample_id"].to_numpy()
    keep = variant_selection(y, ids, ratio, GRID, seed=0)
    counts = GRID.counts(y[keep])
    orig = GRID.counts(y)
    assert counts[counts > 0].max() / counts[counts > 0].min() <= ratio
    assert set(np.flatnonzero(counts)) == set(np.flatnonzero(orig))  # no bin lost
    np.testing.assert_array_equal(keep, variant_selection(y, ids, ratio, GRID, seed=0))
