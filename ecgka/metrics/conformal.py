"""Calibrated uncertainty per ECG: a label-conditional (Mondrian) conformal predictive system.

Plain split conformal intervals cover well on average and badly where the model is weakest: a model that
shrinks toward the mean misses the rare high and low K. Here the calibration residuals are grouped by the
range of the TRUE label (Mondrian categories, :func:`mondrian_edges`), so coverage holds in each range:

* **Conformity score** (``score``, :data:`SCORES`). ``"residual"``: ``s = y - yhat`` (the textbook CPS that
  crepes implements). ``"calibrated"``: ``s = yhat - (intercept + slope * y)``, the line the least-squares fit
  of the validation predictions on their labels: a model that shrinks toward the mean has
  ``E[yhat | y] = intercept + slope * y`` with ``slope < 1``, so within a wide bin the residual drifts with
  ``y`` (by ``(1 - slope)`` times the bin's width) and widens every bin's window; the calibrated score does not.
  A fitted slope ``<= SLOPE_FLOOR`` (a model that barely follows the label) falls back to the residual score,
  recorded in ``score_note``.
* **Intervals** (each nominal level ``1 - a``). Bin ``b`` holds the validation ECGs whose true K lies in
  ``[lo_b, hi_b)``; their scores sorted, ``n_b`` of them. ``q_lo_b`` is the ``floor(a/2 (n_b + 1))``-th
  smallest, ``q_hi_b`` the ``ceil((1 - a/2)(n_b + 1))``-th smallest (exact rational arithmetic; crepes'
  ``lower_percentiles`` / ``higher_percentiles`` convention). A candidate K ``y`` is accepted when it lies in
  a bin ``b`` and its score lies in ``[q_lo_b, q_hi_b]``: the true K is accepted with probability >= 1 - a
  conditionally on its bin. Each bin's accepted set is an interval, ``[yhat + q_lo_b, yhat + q_hi_b]``
  (residual) or ``[(yhat - q_hi_b - intercept) / slope, (yhat - q_lo_b - intercept) / slope]`` (calibrated),
  cut to ``[lo_b, hi_b]``; the interval is the hull of the non-empty pieces, clipped to the label grid's
  range; when no bin accepts anything (rare), ``[yhat, yhat]`` clipped.
* **Merging.** A finite equal-tailed quantile needs ``n_b >= ceil(2/a) - 1`` (9 at 80 %, 19 at 90 %,
  39 at 95 %); bins with fewer points than ``BINS_LEVEL`` (90 %) needs are merged with their smaller
  neighbour (smallest bin first). A stricter level pools adjacent bins the same way for its own quantiles
  (stored in each bin of the pool, so a piece per bin still gives its acceptance). Every merge and pooling
  is recorded (``merged``). Only a calibration set too small as a
  whole leaves a quantile unbounded (stored as null; the interval is then the whole label range).
* **Probabilities.** A posterior over the label grid, ``post_j ∝ prior_j f_b(j)(yhat)``: ``prior`` the
  training label histogram, ``f_b`` the density of the validation predictions of bin ``b`` (a histogram on a
  fixed grid of cells, Gaussian-smoothed with Silverman's bandwidth, at least one cell, floored at 1e-9 of
  its peak, summing to 1). ``P(condition) = sum of post_j over the grid values j where the condition holds``
  (the conditions of ``ecgka.metrics.clinical``; the thresholds are Mondrian edges).

Everything is deterministic (no random tie-breaking; ``seed`` is recorded). The fitted layer is a frozen
pydantic model whose JSON (``model_dump(mode="json")``) is all a consumer needs: its ``formula`` spells
the computation in plain words for someone reproducing it without ecgka.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from functools import cached_property
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ecgka.errors import InputError
from ecgka.keys import UNCERTAINTY_LEVELS, interval_columns, set_column
from ecgka.labels import LabelGrid
from ecgka.metrics.clinical import CONDITIONS, UNCERTAINTY_RANGES, applies_to

LEVELS = UNCERTAINTY_LEVELS
SCHEMA_VERSION = 1
DENSITY_FLOOR = 1e-9  # relative to each bin's peak: no ECG gets probability 0 of any bin with prior mass
DENSITY_PAD = 10  # cells beyond each end of the label grid in the prediction-density grid
BINS_LEVEL = 0.9  # bins are merged until this level's quantiles are finite (19 points); stricter levels pool
# neighbouring bins for their own quantiles (39 at 95 %), so the 80 and 90 % intervals keep the finer ranges
FIT_RULE = 2  # changes whenever the fitting rule does (1: bins merged at the strictest level; 2: for 90 %, stricter
# levels pooled); recorded in a run's stored layer, which ``ecgka evaluate`` refits when it differs
SLOPE_FLOOR = 0.05  # the calibrated score needs predictions that follow the label: slope > SLOPE_FLOOR
DEFAULT_SCORE = "calibrated"  # what ``fit_for_dataset`` (``ecgka evaluate``, registration, export) fits: closer
# to nominal per range than "residual" on the simulation and the stand-in runs (docs/uncertainty.md)
ScoreName = Literal["residual", "calibrated"]


class Score(NamedTuple):
    """A conformity score: its value on calibration pairs, and the candidate labels whose score lies in
    ``[q_lo, q_hi]`` for a prediction (an interval, before cutting it to the bin)."""

    value: Any  # (y, yhat, intercept, slope) -> score
    accepted: Any  # (yhat, q_lo, q_hi, intercept, slope) -> (lowest, highest) accepted label


SCORES: dict[str, Score] = {
    "residual": Score(lambda y, yhat, a, c: y - yhat, lambda yhat, q_lo, q_hi, a, c: (yhat + q_lo, yhat + q_hi)),
    "calibrated": Score(lambda y, yhat, a, c: yhat - (a + c * y),
                        lambda yhat, q_lo, q_hi, a, c: ((yhat - q_hi - a) / c, (yhat - q_lo - a) / c)),
}

FORMULA = """\
Label-conditional (Mondrian) conformal predictive system, fitted on the validation split.
bins[b] = {lo, hi}: the true-label range lo <= K < hi (null: unbounded). levels[l] = nominal coverage 1-a.
score (the layer's "score"; absent in layers stored before it existed: "residual"): the conformity score
  of a validation pair (y, yhat), intercept and slope from the layer:
  "residual": y - yhat;  "calibrated": yhat - (intercept + slope * y)  (slope > 0).
  q_lo[l]_b is the floor(a/2 (n+1))-th and q_hi[l]_b the ceil((1-a/2)(n+1))-th smallest score of the n
  validation ECGs whose true K is in bin b, or, at a level that pooled b with its neighbours ("merged"), in
  that pool (null means -inf / +inf).
Interval at levels[l] for a prediction yhat (float64, then float32), for each bin b:
  "residual":   left_b = max(lo_b, yhat + q_lo[l]_b), right_b = min(hi_b, yhat + q_hi[l]_b)
  "calibrated": left_b = max(lo_b, (yhat - q_hi[l]_b - intercept) / slope),
                right_b = min(hi_b, (yhat - q_lo[l]_b - intercept) / slope)
  (lo_b null: -inf, hi_b null: +inf); pieces with left_b <= right_b are kept; k_lo = min(left_b),
  k_hi = max(right_b) over them; no piece kept: k_lo = k_hi = yhat; finally both are clipped to
  [label_lo, label_hi].
Accepted set k_set at levels[l] (the K values accepted; the interval is its hull): the kept pieces (no piece
  kept: the one piece [yhat, yhat]), each clipped to [label_lo, label_hi] and stored as float32, in bin
  order, joined where a piece's left end is <= the previous piece's right end; a list of {lo, hi, hi_open}:
  lo <= K <= hi, or lo <= K < hi when hi_open (the last piece joined was cut at its bin's upper edge hi_b,
  i.e. right_b = hi_b, not null and <= label_hi: K = hi_b belongs to the next bin). Its coverage holds per
  bin (the conformal guarantee); the hull also takes in the gaps between pieces.
Probabilities: prior[j] is the training share of the label grid value g_j = prior_lo + j * prior_step
  (rounded to 10 decimals); b(j) is the bin with lo <= g_j < hi; cell = floor((yhat - density_lo) /
  density_step) clipped to [0, len(density) - 1]; w_j = prior[j] * bins[b(j)].density[cell];
  P(condition) = sum(w_j over j where g_j `op` threshold) / sum(w_j) (op: lt <, ge >=, gt >).
"""


class ConformalBin(BaseModel):
    """One Mondrian category of the true label (after merging) and its score quantiles per level."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lo: float | None  # lo <= K (None: unbounded)
    hi: float | None  # K < hi (None: unbounded)
    n: int  # validation ECGs whose true K lies in the bin
    merged_from: list[tuple[float | None, float | None]]  # the original categories it holds
    q_lo: list[float | None]  # per level; None: unbounded (too few points)
    q_hi: list[float | None]
    density: list[float]  # the bin's prediction density per cell (sums to 1)


class ConditionRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    op: str  # "lt", "ge" or "gt"
    threshold: float


class LabelConditionalCPS(BaseModel):
    """The fitted layer: conformity score, Mondrian bins, score quantiles, label prior, prediction densities."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    method: str = "label-conditional Mondrian conformal predictive system"
    levels: list[float]
    score: ScoreName = "residual"  # the conformity score (``SCORES``); a layer without one is residual
    intercept: float = 0.0  # calibrated score: yhat ~ intercept + slope * y (least squares on the calibration set)
    slope: float = Field(default=1.0, gt=0)
    score_note: str = ""  # why the score differs from the one asked for (the calibrated score's fallback)
    label_lo: float
    label_hi: float
    edges: list[float]  # the inner edges of the Mondrian categories before merging
    min_points: int  # a bin with fewer calibration points was merged
    bins: list[ConformalBin]
    merged: list[str] = Field(default_factory=list)  # one note per merge
    n_calibration: int
    prior_lo: float
    prior_step: float
    prior: list[float]  # training share per label grid value
    density_lo: float
    density_step: float
    conditions: dict[str, ConditionRule] = Field(default_factory=dict)
    seed: int = 0
    source: dict[str, Any] = Field(default_factory=dict)  # what it was fitted from (checkpoint, dataset, split)
    formula: str = FORMULA

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> LabelConditionalCPS:
        """A validated copy: ``update`` is checked and the cached arrays below are recomputed (pydantic's
        own copy would carry them over from the original)."""
        return type(self).model_validate({**self.model_dump(), **dict(update or {})})

    # ---- derived arrays (cached; the model is frozen; ``model_copy`` recomputes them) ----
    @cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([-np.inf if b.lo is None else b.lo for b in self.bins])
        hi = np.array([np.inf if b.hi is None else b.hi for b in self.bins])
        return lo, hi

    @cached_property
    def _quantiles(self) -> list[tuple[np.ndarray, np.ndarray]]:
        def arr(values, fill):
            return np.array([fill if v is None else v for v in values], dtype=np.float64)

        return [(arr([b.q_lo[i] for b in self.bins], -np.inf), arr([b.q_hi[i] for b in self.bins], np.inf))
                for i in range(len(self.levels))]

    @cached_property
    def _posterior_parts(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(density per bin and cell, prior mass per bin, prior mass per bin where each condition holds)."""
        dens = np.array([b.density for b in self.bins], dtype=np.float64)
        prior = np.asarray(self.prior, dtype=np.float64)
        centres = np.round(self.prior_lo + self.prior_step * np.arange(prior.size), 10)
        which = _category(centres, [b.hi for b in self.bins[:-1]])
        mass = np.bincount(which, prior, minlength=len(self.bins))
        cond = {name: np.bincount(which, prior * _holds(rule, centres), minlength=len(self.bins))
                for name, rule in self.conditions.items()}
        return dens, mass, cond

    def _accepted(self, yhat: np.ndarray, level_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(left, right, kept): each bin's accepted piece for each prediction (rows: predictions, columns:
        bins), cut to the bin, and whether it is non-empty (float64, before clipping to the label range)."""
        q_lo, q_hi = self._quantiles[level_index]
        low, high = SCORES[self.score].accepted(yhat.reshape(-1, 1), q_lo, q_hi, self.intercept, self.slope)
        lo_b, hi_b = self._bounds
        left, right = np.maximum(lo_b, low), np.minimum(hi_b, high)
        return left, right, left <= right

    def intervals(self, predictions) -> dict[str, np.ndarray]:
        """``k_lo_<level>``, ``k_hi_<level>`` per level (float32; NaN where the prediction is NaN)."""
        yhat = np.asarray(predictions, dtype=np.float64).ravel()
        out: dict[str, np.ndarray] = {}
        for i, level in enumerate(self.levels):
            left, right, keep = self._accepted(yhat, i)
            lo = np.where(keep, left, np.inf).min(axis=1)
            hi = np.where(keep, right, -np.inf).max(axis=1)
            empty = ~keep.any(axis=1)
            lo = np.where(empty, yhat, lo)
            hi = np.where(empty, yhat, hi)
            lo_name, hi_name = interval_columns(level)
            out[lo_name] = np.clip(lo, self.label_lo, self.label_hi).astype(np.float32)
            out[hi_name] = np.clip(hi, self.label_lo, self.label_hi).astype(np.float32)
        return out

    def _set_pieces(self, yhat: np.ndarray, level_index: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(left, right, kept, right_open) of the accepted set as written: each bin's piece clipped to the label
        range and stored as float32 (as the interval), the interval's rule for an ECG with no piece (one piece
        ``[yhat, yhat]``), nothing for a NaN prediction. A piece cut at its bin's upper edge is open there (that
        value belongs to the next bin). The interval is the hull of the kept pieces."""
        left, right, keep = self._accepted(yhat, level_index)
        hi_b = self._bounds[1]
        right_open = keep & np.isfinite(hi_b) & (right >= hi_b) & (hi_b <= self.label_hi)
        empty = ~keep.any(axis=1)
        left[empty, 0] = right[empty, 0] = yhat[empty]
        keep[empty, 0] = True
        right_open[empty, 0] = False
        keep &= np.isfinite(yhat)[:, None]
        return (np.clip(left, self.label_lo, self.label_hi).astype(np.float32),
                np.clip(right, self.label_lo, self.label_hi).astype(np.float32), keep, right_open & keep)

    def set_pieces(self, predictions) -> dict[float, tuple[np.ndarray, ...]]:
        """Per level: each ECG's accepted set as sorted, disjoint intervals (its bins' pieces, joined where
        they touch): ``(offsets, lo, hi, hi_open)``, ECG ``r`` holding ``lo[offsets[r]:offsets[r + 1]]`` and
        the same slices of ``hi`` and ``hi_open`` (float32, as the interval; none for a NaN prediction). Each
        is closed, ``lo <= K <= hi``, except at ``hi`` where ``hi_open`` (``lo <= K < hi``: cut at a range's
        edge, e.g. 5.5, whose value belongs to the next range, which does not accept it)."""
        yhat = np.asarray(predictions, dtype=np.float64).ravel()
        out = {}
        for i, level in enumerate(self.levels):
            left, right, keep, right_open = self._set_pieces(yhat, i)
            upto = np.full(keep.shape, -np.inf, dtype=np.float32)  # the highest kept right end so far, per row
            upto_open = np.zeros_like(keep)  # ... and whether it is open
            start = np.zeros_like(keep)
            prev = np.full(yhat.size, -np.inf, dtype=np.float32)
            prev_open = np.zeros(yhat.size, dtype=bool)
            for b in range(keep.shape[1]):  # a kept piece starts a new interval unless it touches the one before
                k = keep[:, b]
                start[:, b] = k & (left[:, b] > prev)
                later = k & (right[:, b] >= prev)
                prev_open = np.where(later, right_open[:, b], prev_open)
                prev = np.where(later, right[:, b], prev)
                upto[:, b], upto_open[:, b] = prev, prev_open
            rows, cols = np.nonzero(start)  # row-major: the intervals in order
            same_row_next = np.append(rows[1:] == rows[:-1], False)
            end = np.where(same_row_next, np.maximum(np.append(cols[1:], 0) - 1, 0), keep.shape[1] - 1)
            offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=yhat.size))])
            out[level] = (offsets, left[rows, cols], upto[rows, end], upto_open[rows, end])
        return out

    def sets(self, predictions) -> dict[str, np.ndarray]:
        """``k_set_<level>`` per level: per ECG, its accepted set as an array of ``{"lo", "hi", "hi_open"}``
        (sorted, disjoint; :meth:`set_pieces`), None where the prediction is NaN: an object column that Parquet
        stores as a list of structs (built by Arrow, not per ECG in Python)."""
        import pyarrow as pa  # lazy: the layer's other users need numpy only

        invalid = pa.array(~np.isfinite(np.asarray(predictions, dtype=np.float64).ravel()))
        out = {}
        for level, (offsets, lo, hi, hi_open) in self.set_pieces(predictions).items():
            pieces = pa.StructArray.from_arrays([pa.array(lo), pa.array(hi), pa.array(hi_open)],
                                                names=["lo", "hi", "hi_open"])
            lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pieces, mask=invalid)
            out[set_column(level)] = lists.to_numpy(zero_copy_only=False)
        return out

    def in_set(self, labels, predictions) -> dict[float, np.ndarray]:
        """Per level: whether each true value lies in its ECG's accepted set as written (:meth:`sets`: ``lo <= K
        <= hi``, ``K < hi`` where ``hi_open``; both rounded to 6 decimals, as the interval is compared): the
        conformal acceptance of the true value by its own bin."""
        y = np.round(np.asarray(labels, dtype=np.float64), 6).reshape(-1, 1)
        yhat = np.asarray(predictions, dtype=np.float64).ravel()
        out = {}
        for i, level in enumerate(self.levels):
            left, right, keep, right_open = self._set_pieces(yhat, i)
            hi = np.round(right.astype(np.float64), 6)
            inside = (np.round(left.astype(np.float64), 6) <= y) & ((y < hi) | ((y == hi) & ~right_open))
            out[level] = (keep & inside).any(axis=1)
        return out

    def set_length(self, predictions) -> dict[float, np.ndarray]:
        """Per level: the total length of each ECG's accepted set (at most the interval's width)."""
        yhat = np.asarray(predictions, dtype=np.float64).ravel()
        out = {}
        for i, level in enumerate(self.levels):
            left, right, keep, _ = self._set_pieces(yhat, i)
            out[level] = np.where(keep, right.astype(np.float64) - left.astype(np.float64), 0.0).sum(axis=1)
        return out

    def probabilities(self, predictions) -> dict[str, np.ndarray]:
        """``p_<condition>`` per clinical condition (float32 in [0, 1]; NaN where the prediction is NaN)."""
        yhat = np.asarray(predictions, dtype=np.float64)
        dens, mass, cond = self._posterior_parts
        n_cells = dens.shape[1]
        finite = np.isfinite(yhat)
        cell = np.floor((np.where(finite, yhat, 0.0) - self.density_lo) / self.density_step)
        cell = np.clip(cell, 0, n_cells - 1).astype(np.int64)
        f = dens[:, cell]  # bins x ECGs
        total = mass @ f
        out = {}
        for name, rule in self.conditions.items():
            p = np.clip((cond[name] @ f) / total, 0.0, 1.0)
            out[rule.column] = np.where(finite, p, np.nan).astype(np.float32)
        return out

    def columns(self, predictions) -> dict[str, np.ndarray]:
        """The interval and probability columns (what ``ecgka predict`` and ``ecgka evaluate`` append)."""
        return {**self.intervals(predictions), **self.probabilities(predictions)}

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for level in self.levels for c in interval_columns(level)) + tuple(
            rule.column for rule in self.conditions.values())

    @property
    def set_column_names(self) -> tuple[str, ...]:
        """The accepted-set list columns (:meth:`sets`), one per level, written after :attr:`column_names`."""
        return tuple(set_column(level) for level in self.levels)

    def merge_note(self) -> str:
        """One line for the card and the report: which ranges were merged (or that none were)."""
        if not self.merged:
            return f"no range merged (every range had >= {self.min_points} validation ECGs)"
        return "; ".join(self.merged)


def _holds(rule: ConditionRule, values: np.ndarray) -> np.ndarray:
    return CONDITIONS_OPS[rule.op](np.round(values, 6), rule.threshold).astype(np.float64)


CONDITIONS_OPS = {"lt": np.less, "ge": np.greater_equal, "gt": np.greater}


def _category(values, inner_edges: Sequence[float | None]) -> np.ndarray:
    """Mondrian category of each label: the number of inner edges ``<= value`` (values rounded to 6
    decimals, as the clinical conditions compare them)."""
    edges = np.asarray([e for e in inner_edges], dtype=np.float64)
    return np.searchsorted(edges, np.round(np.asarray(values, dtype=np.float64), 6), side="right")


def mondrian_edges(grid: LabelGrid, train_counts=None) -> list[float]:
    """Inner edges of the Mondrian categories of the true label, inside the grid's range: for a potassium
    grid the ``UNCERTAINTY_RANGES`` edges and the conditions' thresholds (2.5, 3.5, 5.5, 6.5), and, given the
    training counts per grid bin, every boundary where the shot group changes (half-way between the two
    grid values)."""
    edges: set[float] = set()
    if applies_to(grid):
        edges |= {v for _, lo, hi in UNCERTAINTY_RANGES for v in (lo, hi) if v is not None}
        edges |= {c.threshold for c in CONDITIONS.values()}
    if train_counts is not None:
        counts = np.asarray(train_counts)
        if counts.size != grid.n_bins:
            raise InputError(f"training counts have {counts.size} bins, the label grid {grid.n_bins}")
        groups = grid.shots.group_of_counts(counts)
        change = np.flatnonzero(groups[1:] != groups[:-1])
        edges |= {round(grid.lo + (j + 0.5) * grid.step, 10) for j in change.tolist()}
    return sorted(float(e) for e in edges if grid.lo < e <= grid.hi)


def bins_min_points(levels: Sequence[float]) -> int:
    """Fewest calibration points per bin: :func:`min_points` at ``BINS_LEVEL`` (at the strictest level when
    every level is below it). A stricter level pools adjacent bins for its quantiles instead."""
    return min_points(min(max(levels), BINS_LEVEL))


def _level_name(level: float) -> str:
    return f"{float(Fraction(str(level)) * 100):g} %"


def _merge_notes(merges, bounds: Sequence[float | None], n: int, need: int, verb: str) -> list[str]:
    """One line per merge of :func:`_merge` (groups of ``n`` ranges bounded by ``bounds``), naming the ranges as
    they were when merged."""
    notes = []
    spans = [[i] for i in range(n)]
    for i, j, n_i, n_j in merges:
        a, b = min(i, j), max(i, j)
        notes.append(f"{_fmt(bounds[spans[i][0]], bounds[spans[i][-1] + 1])} (n={n_i}) {verb} "
                     f"{_fmt(bounds[spans[j][0]], bounds[spans[j][-1] + 1])} (n={n_j}): fewer than {need} "
                     "validation ECGs")
        spans[a:b + 1] = [spans[a] + spans[b]]
    return notes


def min_points(level: float) -> int:
    """Fewest calibration points for finite equal-tailed quantiles at ``level``: ``ceil(2/a) - 1``."""
    a = 1 - Fraction(str(level))
    return math.ceil(2 / a) - 1


def _ranks(level: float, n: int) -> tuple[int, int]:
    """1-based ranks of the lower and upper residual quantiles among ``n`` (exact rational arithmetic)."""
    half = (1 - Fraction(str(level))) / 2
    return math.floor(half * (n + 1)), math.ceil((1 - half) * (n + 1))


def _fmt(lo: float | None, hi: float | None) -> str:
    """A range's name as ``UNCERTAINTY_RANGES`` spells them (``< 3.0``, ``3.0 to < 3.5``, ``>= 6.0``)."""
    if lo is None:
        return f"< {round(hi, 6)}"
    if hi is None:
        return f">= {round(lo, 6)}"
    return f"{round(lo, 6)} to < {round(hi, 6)}"


def _merge(counts: list[int], need: int) -> tuple[list[list[int]], list[tuple[int, int, int, int]]]:
    """Groups of adjacent categories, each with >= ``need`` points (the smallest first, into its smaller
    neighbour; ties: the lower one), and each merge ``(group, into, n_group, n_into)`` in order."""
    groups = [[i] for i in range(len(counts))]
    sizes = list(counts)
    notes: list[tuple[int, int, int, int]] = []
    while len(groups) > 1 and min(sizes) < need:
        i = int(np.argmin(sizes))
        if i == 0:
            j = 1
        elif i == len(groups) - 1:
            j = i - 1
        else:
            j = i - 1 if sizes[i - 1] <= sizes[i + 1] else i + 1
        notes.append((i, j, sizes[i], sizes[j]))
        a, b = min(i, j), max(i, j)
        groups[a:b + 1] = [groups[a] + groups[b]]
        sizes[a:b + 1] = [sizes[a] + sizes[b]]
    return groups, notes


def _density(preds: np.ndarray, lo: float, step: float, n_cells: int) -> list[float]:
    """Gaussian-smoothed histogram of ``preds`` on ``n_cells`` cells from ``lo`` (sums to 1)."""
    if preds.size == 0:
        return [1.0 / n_cells] * n_cells
    cells = np.clip(np.floor((preds - lo) / step), 0, n_cells - 1).astype(np.int64)
    hist = np.bincount(cells, minlength=n_cells).astype(np.float64)
    sd = float(np.std(preds)) if preds.size > 1 else 0.0
    bandwidth = max(step, 1.06 * sd * preds.size ** -0.2) / step  # in cells
    half = int(math.ceil(4 * bandwidth))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / bandwidth) ** 2)
    smooth = np.convolve(hist, kernel / kernel.sum(), mode="full")[half:half + n_cells]
    smooth = np.maximum(smooth, DENSITY_FLOOR * smooth.max())
    return (smooth / smooth.sum()).tolist()


def score_line(labels: np.ndarray, predictions: np.ndarray, score: str) -> tuple[str, float, float, str]:
    """(score used, intercept, slope, note) for the score asked for: the residual score's ``(0, 1)``; the
    calibrated score's least-squares line of the predictions on the labels, or the residual score with a note
    when its slope is not above ``SLOPE_FLOOR`` (or the labels do not vary)."""
    if score not in SCORES:
        raise InputError(f"conformal score {score!r}: expected one of {', '.join(SCORES)}")
    if score == "residual":
        return "residual", 0.0, 1.0, ""
    dy = labels - labels.mean()
    var = float(dy @ dy)
    slope = float(dy @ (predictions - predictions.mean())) / var if var > 0 else math.nan
    if not slope > SLOPE_FLOOR:
        return "residual", 0.0, 1.0, (f"calibrated score asked, but the least-squares slope of the predictions on "
                                      f"the labels is {slope:.4g} (not above {SLOPE_FLOOR}): residual score used")
    return "calibrated", float(predictions.mean() - slope * labels.mean()), slope, ""


def fit_label_conditional(labels, predictions, *, edges: Sequence[float], prior_counts, prior_lo: float,
                          prior_step: float, levels: Sequence[float] = LEVELS, seed: int = 0,
                          conditions: Sequence[str] | None = None, score: ScoreName = "residual"
                          ) -> LabelConditionalCPS:
    """Fit the layer on the VALIDATION split's labels and predictions. ``edges``: inner edges of the
    Mondrian categories (:func:`mondrian_edges`); ``prior_counts``: the training label histogram on the
    label grid ``prior_lo, prior_lo + prior_step, ...``; ``conditions``: the clinical conditions to give
    probabilities for (default: all of ``CONDITIONS``; ``()`` for a label they do not apply to); ``score``:
    the conformity score (``SCORES``; the calibrated one's line is fitted here, :func:`score_line`)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    yhat = np.asarray(predictions, dtype=np.float64).ravel()
    if y.shape != yhat.shape:
        raise InputError(f"conformal calibration: {y.size} labels but {yhat.size} predictions")
    ok = np.isfinite(y) & np.isfinite(yhat)
    y, yhat = y[ok], yhat[ok]
    if y.size == 0:
        raise InputError("conformal calibration: no validation ECG with a finite label and prediction")
    levels = [float(v) for v in levels]
    if not levels or any(not 0 < v < 1 for v in levels):
        raise InputError(f"conformal levels must lie strictly between 0 and 1, got {levels}")
    prior = np.asarray(prior_counts, dtype=np.float64).ravel()
    if prior.size == 0 or prior.min() < 0 or prior.sum() <= 0:
        raise InputError("conformal calibration: the training label histogram is empty")
    label_lo = float(prior_lo)
    label_hi = float(round(prior_lo + prior_step * (prior.size - 1), 10))
    inner = sorted({float(e) for e in edges})
    bounds = [None, *inner, None]
    cats = _category(y, inner)
    counts = np.bincount(cats, minlength=len(inner) + 1).tolist()
    need = bins_min_points(levels)
    groups, merges = _merge(counts, need)
    notes = _merge_notes(merges, bounds, len(counts), need, "merged with")

    n_cells = prior.size + 2 * DENSITY_PAD
    density_lo = float(round(label_lo - (DENSITY_PAD + 0.5) * prior_step, 10))
    used, intercept, slope, score_note = score_line(y, yhat, score)
    scores = SCORES[used].value(y, yhat, intercept, slope)
    bin_of = np.empty(len(counts), dtype=np.int64)  # original category -> bin
    for k, group in enumerate(groups):
        bin_of[group] = k
    in_bin = bin_of[cats]
    sizes = [int((in_bin == k).sum()) for k in range(len(groups))]
    edges_b = [bounds[g[0]] for g in groups] + [bounds[groups[-1][-1] + 1]]
    q_lo = [[None] * len(levels) for _ in groups]
    q_hi = [[None] * len(levels) for _ in groups]
    for li, level in enumerate(levels):  # a stricter level pools adjacent bins until each has min_points(level)
        pools, pooled = _merge(sizes, min_points(level))
        notes += _merge_notes(pooled, edges_b, len(sizes), min_points(level),
                              f"pooled at {_level_name(level)} with")
        for pool in pools:
            r = np.sort(scores[np.isin(in_bin, pool)])
            k_lo, k_hi = _ranks(level, int(r.size))
            for k in pool:
                q_lo[k][li] = float(r[k_lo - 1]) if k_lo >= 1 else None
                q_hi[k][li] = float(r[k_hi - 1]) if k_hi <= r.size else None
    bins = []
    for k, group in enumerate(groups):
        member = in_bin == k
        bins.append(ConformalBin(lo=bounds[group[0]], hi=bounds[group[-1] + 1], n=sizes[k],
                                 merged_from=[(bounds[g], bounds[g + 1]) for g in group], q_lo=q_lo[k],
                                 q_hi=q_hi[k], density=_density(yhat[member], density_lo, float(prior_step),
                                                                n_cells)))
    names = tuple(CONDITIONS) if conditions is None else tuple(conditions)
    rules = {name: ConditionRule(column=f"p_{name}", op=CONDITIONS[name].op, threshold=CONDITIONS[name].threshold)
             for name in names}
    return LabelConditionalCPS(
        levels=levels, score=used, intercept=intercept, slope=slope, score_note=score_note, label_lo=label_lo, label_hi=label_hi, edges=inner, min_points=need, bins=bins,
        merged=notes, n_calibration=int(y.size), prior_lo=float(prior_lo), prior_step=float(prior_step),
        prior=(prior / prior.sum()).tolist(), density_lo=density_lo, density_step=float(prior_step),
        conditions=rules, seed=int(seed))


def fit_for_dataset(info, labels, predictions, *, levels: Sequence[float] = LEVELS, seed: int = 0,
                    source: Mapping[str, Any] | None = None, score: ScoreName = DEFAULT_SCORE
                    ) -> LabelConditionalCPS:
    """:func:`fit_label_conditional` with the edges, prior and conditions of a dataset description
    (``ecgka.catalog.info.DatasetInfo``): shot-group and clinical edges, training prevalence; ``score``
    defaults to ``DEFAULT_SCORE`` (the one ``ecgka evaluate`` fits)."""
    grid, counts = info.grid, info.train_bins.array
    layer = fit_label_conditional(labels, predictions, edges=mondrian_edges(grid, counts), prior_counts=counts,
                                  prior_lo=grid.lo, prior_step=grid.step, levels=levels, seed=seed,
                                  conditions=None if applies_to(grid) else (), score=score)
    return layer.model_copy(update={"source": dict(source or {})}) if source else layer


def layer_from_json(data: Any, what: str = "uncertainty.json") -> LabelConditionalCPS:
    """The layer from its JSON form, or a one-line InputError naming ``what``."""
    from pydantic import ValidationError

    if not isinstance(data, Mapping):
        raise InputError(f"{what}: not a conformal layer (a JSON object)")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{what}: conformal layer schema {data.get('schema_version')!r}, this ecgka reads "
                         f"{SCHEMA_VERSION} (run `ecgka evaluate` again)")
    try:
        return LabelConditionalCPS.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"{what}: bad conformal layer ({'.'.join(map(str, first['loc']))}: {first['msg']})") from None
