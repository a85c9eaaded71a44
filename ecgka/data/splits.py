"""Subject-disjoint splits and imbalance variants (pure functions on arrays; bins from ``LabelGrid``).

Validation and test are balanced over label bins, and a subject's split depends only on itself: its id,
the salt (``split.seed``) and its own labels, never on the order or presence of other subjects, so
fixing, losing or adding one subject's records never reshuffles the dataset.

- Every subject has a *priority*, an *eligibility* and a *side*, from the SHA-256 of
  ``"<salt>:<subject_id>"``: the priority is its first 8 bytes (lower first), the subject is eligible for
  val/test when priority / 2**64 < ``holdout_max_fraction``, and the lowest bit of the 9th byte is its
  side (val or test).
- Every subject competes in one bin only, its *home bin*: the bin of its own labels farthest from the
  label's reference value (potassium: 4.2 mmol/L, the middle of the normal range; other labels: the
  middle of the grid), i.e. the rarest of its labels (ties: the higher bin). Its candidate sample is its
  lowest ``sample_id`` in that bin.
- In each bin, val takes the eligible val-side home subjects in priority order and test the eligible
  test-side ones, ``m = min(per_bin_cap, eligible val-side, eligible test-side)`` each: val and test hold
  the same number of samples of every bin, and at most the eligible share (``holdout_max_fraction`` of
  the subjects, in expectation) of a bin's home subjects leaves train.
- A held-out subject gives only its candidate sample; its other samples are excluded
  (``not_selected_for_split``). Every other subject is train, with every sample.

So a subject's place depends only on itself and on the eligible home subjects of its bin with a higher
priority: losing one subject moves at most one other subject (the next one of its bin and side, or the
last one of the other side when the bin's ``m`` drops by one); losing an ineligible subject moves none.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from ecgka.data.config import SplitConfig
from ecgka.labels import LabelGrid

NOT_SELECTED = "not_selected_for_split"
SIDES = ("val", "test")  # side 0, side 1 of a subject's hash
REFERENCE = {"potassium": 4.2}  # the label value nearest which bins are commonest (home bins: farthest first)


def _budgets(cand: pd.DataFrame, cfg: SplitConfig, size: int) -> np.ndarray:
    """Per bin: how many of its subjects may be held out (``holdout_max_fraction`` of them, rounded down)."""
    n_subj = np.bincount(cand["bin"].to_numpy(), minlength=size)
    return np.floor(n_subj * cfg.holdout_max_fraction + 1e-9).astype(np.int64)


def subject_hashes(subjects, salt: str) -> tuple[np.ndarray, np.ndarray]:
    """Per subject: the priority (uint64, lower first) and the side (0: val, 1: test) of its salted hash."""
    digests = [hashlib.sha256(f"{salt}:{int(s)}".encode()).digest() for s in subjects]
    priority = np.array([int.from_bytes(d[:8], "big") for d in digests], dtype=np.uint64)
    side = np.array([d[8] & 1 for d in digests], dtype=np.int8)
    return priority, side


def eligible(priority: np.ndarray, fraction: float) -> np.ndarray:
    """Subjects that may be held out: priority / 2**64 < ``fraction`` (all of them for 1.0)."""
    if fraction >= 1:
        return np.ones(len(priority), dtype=bool)
    return priority < np.uint64(min(int(fraction * 2**64), 2**64 - 1))


def bin_rarity(grid: LabelGrid) -> np.ndarray:
    """Per bin: the distance of its centre from the label's reference value (larger: rarer), a fixed order."""
    centres = np.asarray(grid.centres, dtype=np.float64)
    ref = REFERENCE.get(grid.name, (grid.lo + grid.hi) / 2)
    return np.abs(centres - ref)


def _home_candidates(df: pd.DataFrame, grid: LabelGrid) -> pd.DataFrame:
    """One row per subject: its home bin (rarest of its own bins, ties the higher) and its lowest sample there."""
    rarity = bin_rarity(grid)
    order = df.assign(rarity=rarity[np.minimum(df["bin"].to_numpy(), len(rarity) - 1)])
    order = order.sort_values(["subject_id", "rarity", "bin", "sample_id"], ascending=[True, False, False, True])
    return order.drop_duplicates("subject_id", keep="first")


def assign_splits(meta: pd.DataFrame, cfg: SplitConfig, grid: LabelGrid) -> np.ndarray:
    """Split name per row of ``meta`` (``sample_id, subject_id, potassium``); NOT_SELECTED for dropped rows.

    See the module docstring: salted subject hashes, one home bin per subject, ``m`` per split and bin.
    """
    df = _frame(meta, grid)
    out = np.full(len(df), "train", dtype=object)
    if df.empty:
        return out
    cand = _home_candidates(df, grid)
    priority, side = subject_hashes(cand["subject_id"].to_numpy(), str(cfg.seed))
    cand = cand.assign(priority=priority, side=side)[eligible(priority, cfg.holdout_max_fraction)]
    cand = cand.sort_values(["bin", "priority", "subject_id"])
    chosen: dict[int, str] = {}
    for _, group in cand.groupby("bin", sort=True):
        queues = {split: group.loc[group["side"] == k, "sample_id"].to_numpy() for k, split in enumerate(SIDES)}
        m = min(cfg.per_bin_cap, *(len(q) for q in queues.values()))
        for split, queue in queues.items():
            chosen.update((int(x), split) for x in queue[:m])
    held = cand.loc[cand["sample_id"].isin(list(chosen)), "subject_id"]
    out[df["subject_id"].isin(held).to_numpy()] = NOT_SELECTED
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
            # the emptier split; on a tie the subject's hash decides (neither split is favoured)
            split = min(open_, key=lambda s, r=int(rank[subject]) & 1: (got[s][b], (s == "test") != bool(r)))
            got[split][b] += 1
            held[bins] += 1
            drawn[int(subject)] = (idx, split)
    out[df["subject_id"].isin(list(drawn)).to_numpy()] = NOT_SELECTED
    for idx, split in drawn.values():
        out.loc[idx] = split
    return out.loc[_frame(meta, grid).index].to_numpy()
