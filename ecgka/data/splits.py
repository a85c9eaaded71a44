"""Subject-disjoint splits and imbalance variants (pure functions on arrays; bins from ``LabelGrid``).

Validation and test are balanced over label bins: for each bin (rarest first) subjects are drawn in a
seeded random order and each drawn subject contributes one sample of that bin, until the split holds
``per_bin_cap`` samples of the bin, or until the bin's holdout budget (``holdout_max_fraction`` of its
subjects, counting every held-out subject with a sample in the bin) is spent: a rare bin gives what it
can, split evenly between val and test. A subject drawn for
val or test gives only that one sample; its other samples are excluded (``not_selected_for_split``), so
balance is exact and subjects never cross splits. All other subjects form train with every sample.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ecgka.data.config import SplitConfig
from ecgka.labels import LabelGrid

NOT_SELECTED = "not_selected_for_split"


def _budgets(cand: pd.DataFrame, cfg: SplitConfig, size: int) -> np.ndarray:
    """Per bin: how many of its subjects may be held out (``holdout_max_fraction`` of them, rounded down)."""
    n_subj = np.bincount(cand["bin"].to_numpy(), minlength=size)
    return np.floor(n_subj * cfg.holdout_max_fraction + 1e-9).astype(np.int64)


def assign_splits(meta: pd.DataFrame, cfg: SplitConfig, grid: LabelGrid) -> np.ndarray:
    """Split name per row of ``meta`` (``sample_id, subject_id, potassium``); NOT_SELECTED for dropped rows.

    A held-out subject removes all its samples from train, so every bin it touches pays from that bin's
    budget: train keeps at least ``1 - holdout_max_fraction`` of the subjects of every bin.
    """
    df = pd.DataFrame({"sample_id": meta["sample_id"].to_numpy(np.int64),
                       "subject_id": meta["subject_id"].to_numpy(np.int64),
                       "bin": grid.clipped_index(meta["potassium"].to_numpy())})
    out = np.full(len(df), "train", dtype=object)
    if df.empty:
        return out
    subjects = np.unique(df["subject_id"].to_numpy())
    rank = pd.Series(np.random.default_rng(cfg.seed).permutation(len(subjects)), index=subjects)
    df["rank"] = rank.loc[df["subject_id"]].to_numpy()
    # one candidate sample per (bin, subject): the lowest sample_id
    cand = df.sort_values(["bin", "rank", "sample_id"]).drop_duplicates(["bin", "subject_id"], keep="first")
    size = int(df["bin"].max()) + 1
    budget, held = _budgets(cand, cfg, size), np.zeros(size, np.int64)
    subject_bins = {int(s): g.to_numpy() for s, g in cand.groupby("subject_id")["bin"]}
    groups = {int(b): g for b, g in cand.groupby("bin")}
    order = sorted(groups, key=lambda b: (len(groups[b]), b))
    holdout: dict[int, str] = {}  # subject -> split
    chosen: dict[int, str] = {}  # sample_id -> split
    for b in order:
        need = {"val": min(cfg.per_bin_cap, (budget[b] + 1) // 2), "test": min(cfg.per_bin_cap, budget[b] // 2)}
        got = {"val": 0, "test": 0}
        for subject, sample in zip(groups[b]["subject_id"], groups[b]["sample_id"], strict=True):
            if need["val"] == 0 and need["test"] == 0:
                break
            bins = subject_bins[int(subject)]
            if subject in holdout or (held[bins] >= budget[bins]).any():
                continue
            # alternate (the split with fewer so far, val first): equal counts whenever the bin runs out
            split = "val" if need["val"] > 0 and (got["val"] <= got["test"] or need["test"] == 0) else "test"
            need[split] -= 1
            got[split] += 1
            held[bins] += 1
            holdout[int(subject)] = split
            chosen[int(sample)] = split
    out[df["subject_id"].isin(list(holdout)).to_numpy()] = NOT_SELECTED
    picked = df["sample_id"].map(chosen)
    out[picked.notna().to_numpy()] = picked.dropna().to_numpy()
    return out


def variant_selection(y: np.ndarray, sample_id: np.ndarray, ratio: float, grid: LabelGrid, seed: int) -> np.ndarray:
    """Mask of training rows kept for imbalance ratio ``ratio``: every bin capped at ratio * (smallest bin)."""
    bins = grid.clipped_index(y)
    counts = np.bincount(bins, minlength=grid.n_bins)
    n_min = int(counts[counts > 0].min()) if (counts > 0).any() else 0
    cap = max(1, int(math.floor(ratio * n_min + 1e-9)))
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(y), dtype=bool)
    order = np.argsort(sample_id, kind="stable")
    for b in np.flatnonzero(counts > cap):
        idx = order[bins[order] == b]
        keep[rng.permutation(idx)[:cap]] = True
    keep[np.isin(bins, np.flatnonzero(counts <= cap))] = True
    return keep


def _frame(meta: pd.DataFrame, grid: LabelGrid) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": meta["sample_id"].to_numpy(np.int64),
                         "subject_id": meta["subject_id"].to_numpy(np.int64),
                         "bin": grid.clipped_index(meta["potassium"].to_numpy())})


def assign_splits_stable(meta: pd.DataFrame, cfg: SplitConfig, grid: LabelGrid, prior: dict[int, str],
                         rank_of) -> np.ndarray:
    """Splits of a later dataset version: every subject keeps its ``prior`` split.

    A previous val/test subject keeps one sample (the lowest ``sample_id`` left: its previous chosen ECG,
    the only one the build reads); a previous train subject stays train with all samples. New subjects are
    drawn in the order of ``rank_of(subjects)`` (a deterministic salted hash): bins rarest first, one sample
    each to val or test only while that split's bin holds fewer than ``per_bin_cap`` samples and the bin's
    holdout budget (``holdout_max_fraction`` of its subjects) is not spent; everyone else is train.
    """
    df = _frame(meta, grid).sort_values("sample_id", kind="stable")
    out = pd.Series("train", index=df.index, dtype=object)
    if df.empty:
        return out.to_numpy()
    before = df["subject_id"].map(prior)
    held_before = before.isin(["val", "test"])
    first = held_before & ~df["subject_id"].duplicated()
    out[held_before] = NOT_SELECTED
    out[first] = before[first]
    size = max(int(df["bin"].max()) + 1, grid.n_bins)
    got = {s: np.bincount(df.loc[first & (before == s), "bin"], minlength=size) for s in ("val", "test")}
    cand_all = df[~held_before | first].drop_duplicates(["bin", "subject_id"])
    budget = _budgets(cand_all, cfg, size)
    held = got["val"] + got["test"]
    new = df[before.isna()]
    if new.empty:
        return out.loc[_frame(meta, grid).index].to_numpy()
    subjects = np.unique(new["subject_id"].to_numpy())
    rank = rank_of(subjects)
    order = pd.Series(np.arange(len(subjects)), index=sorted(subjects, key=lambda s: (rank[s], s)))
    new = new.assign(rank=order.loc[new["subject_id"]].to_numpy())
    cand = new.sort_values(["bin", "rank", "sample_id"]).drop_duplicates(["bin", "subject_id"], keep="first")
    subject_bins = {int(s): g.to_numpy() for s, g in cand.groupby("subject_id")["bin"]}
    groups = {int(b): g for b, g in cand.groupby("bin")}
    drawn: dict[int, tuple[int, str]] = {}  # subject -> (index of its chosen row, split)
    for b in sorted(groups, key=lambda b: (len(groups[b]), b)):
        for idx, subject in zip(groups[b].index, groups[b]["subject_id"], strict=True):
            open_ = [s for s in ("val", "test") if got[s][b] < cfg.per_bin_cap]
            if not open_:
                break
            bins = subject_bins[int(subject)]
            if int(subject) in drawn or (held[bins] >= budget[bins]).any():
                continue
            split = min(open_, key=lambda s: (got[s][b], s == "test"))
            got[split][b] += 1
            held[bins] += 1
            drawn[int(subject)] = (idx, split)
    out[df["subject_id"].isin(list(drawn)).to_numpy()] = NOT_SELECTED
    for idx, split in drawn.values():
        out.loc[idx] = split
    return out.loc[_frame(meta, grid).index].to_numpy()
