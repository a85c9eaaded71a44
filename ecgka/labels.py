"""The label grid and the shot-group rule: the one home of every bin and shot computation.

A :class:`LabelGrid` is ``lo, lo + step, ..., hi`` (potassium: 1.5-10.0 mmol/L in 0.1 steps; ages: 0-120
years in 1-year steps). The bin of a label is its nearest grid value, by index:

    bin(y) = floor((y - lo) / step + 1/2 + tol)

**Half-way rule.** A label half-way between two grid values belongs to the *upper* bin (3.45 -> 3.5,
3.55 -> 3.6). ``tol`` is the label's own storage precision expressed in bins (a few float32 or float64
ulps at the grid's largest value), so a grid value and a half-way value land in the same bin whether
they were stored as float32 or float64, and so do their neighbours one ulp away. Plain ``rint`` rounds
half to even and float32 rounding then decides (3.45 and 3.55 both fell in the 3.5 bin).

A :class:`ShotRule` assigns each bin to a shot group from its training count ``c``:
``relative`` (the Dist Loss paper, ECG-Ka-DIR): many if ``c > many * n_max``, few if ``c < few * n_max``;
``absolute`` (the DIR rule for ages): many if ``c > many``, few if ``c < few``; median otherwise. A bin
without training samples is few-shot under both rules.

>>> grid = LabelGrid.preset("potassium")
>>> grid.n_bins, grid.bin_index([3.45, 3.55, 4.1]).tolist()
(86, [20, 21, 26])
>>> LabelGrid.preset("age").shots.rule
'absolute'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ecgka.config import ConfigModel
from ecgka.errors import ConfigError, InputError

GROUPS = ("many", "median", "few")
DEFAULT_CUTS: dict[str, tuple[float, float]] = {"relative": (0.5, 0.15), "absolute": (100.0, 20.0)}
HALF_WAY = "up"  # recorded in manifests: the documented half-way rule
_ULPS = 8  # storage precision in ulps at the grid's largest magnitude
_MAX_TOL = 1e-3  # bins: float16 labels cannot be exact on a fine grid; their tolerance is capped


class ShotRule(ConfigModel):
    """How bins are grouped into many / median / few shots from their training counts."""

    rule: Literal["relative", "absolute"] = "relative"
    many: float = Field(0.5, ge=0)  # unset: the rule's default, 0.5 (relative) or 100 (absolute)
    few: float = Field(0.15, ge=0)  # unset: the rule's default, 0.15 (relative) or 20 (absolute)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            rule = data.get("rule", "relative")
            if rule in DEFAULT_CUTS:
                many, few = DEFAULT_CUTS[rule]
                data = {**data, "many": data.get("many") if data.get("many") is not None else many,
                        "few": data.get("few") if data.get("few") is not None else few}
        return data

    @model_validator(mode="after")
    def _order(self) -> ShotRule:
        if self.few > self.many:
            raise ValueError(f"few ({self.few}) must not exceed many ({self.many})")
        return self

    def thresholds(self, n_max: float) -> tuple[float, float]:
        """The (many, few) cut-offs in training samples per bin."""
        scale = float(n_max) if self.rule == "relative" else 1.0
        return self.many * scale, self.few * scale

    def group_of_counts(self, counts, n_max: float | None = None) -> np.ndarray:
        """The group name of each training count (``n_max``: the largest count, by default of ``counts``)."""
        counts = np.asarray(counts, dtype=np.float64)
        n_max = float(counts.max(initial=0)) if n_max is None else float(n_max)
        many, few = self.thresholds(n_max)
        return np.where(counts > many, "many", np.where(counts < few, "few", "median"))

    def groups(self, counts) -> dict[str, list[int]]:
        """Bin indices of each group among the bins that hold training samples (the manifest's layout)."""
        counts = np.asarray(counts)
        names = self.group_of_counts(counts)
        return {g: [int(i) for i in np.flatnonzero((names == g) & (counts > 0))] for g in GROUPS}


class LabelGridConfig(ConfigModel):
    """The label of a dataset: name, unit, grid and shot rule (YAML ``label:``; a preset name also works)."""

    name: str = "potassium"
    unit: str = "mmol/L"
    lo: float = 1.5
    hi: float = 10.0
    step: float = Field(0.1, gt=0)
    shots: ShotRule = Field(default_factory=ShotRule)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, str):
            return dict(PRESETS.get(data) or _unknown_preset(data))
        if isinstance(data, dict) and "preset" in data:
            data = dict(data)
            name = data.pop("preset")
            return {**(PRESETS.get(name) or _unknown_preset(name)), **data}
        return data

    @model_validator(mode="after")
    def _range(self) -> LabelGridConfig:
        if not self.lo < self.hi:
            raise ValueError(f"label lo ({self.lo}) must be below hi ({self.hi})")
        n = (self.hi - self.lo) / self.step
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"label range {self.lo}-{self.hi} is not a whole number of steps of {self.step}")
        return self

    @property
    def grid(self) -> LabelGrid:
        return LabelGrid(self.lo, self.hi, self.step, self.name, self.unit, self.shots)


PRESETS: dict[str, dict[str, Any]] = {
    "potassium": {"name": "potassium", "unit": "mmol/L", "lo": 1.5, "hi": 10.0, "step": 0.1,
                  "shots": {"rule": "relative"}},
    "age": {"name": "age", "unit": "years", "lo": 0.0, "hi": 120.0, "step": 1.0, "shots": {"rule": "absolute"}},
}


def _unknown_preset(name: str) -> dict:
    raise ValueError(f"unknown label preset {name!r} (valid: {', '.join(sorted(PRESETS))})")


@dataclass(frozen=True)
class LabelGrid:
    """``lo, lo + step, ..., hi`` with the bin rule, the centres and the shot rule of a dataset."""

    lo: float
    hi: float
    step: float
    name: str = "label"
    unit: str = ""
    shots: ShotRule = field(default_factory=ShotRule)

    def __post_init__(self) -> None:
        if not (self.step > 0 and self.hi >= self.lo):
            raise ConfigError(f"label grid needs lo <= hi and step > 0, got ({self.lo}, {self.hi}, {self.step})")

    @classmethod
    def preset(cls, name: str, **changes: Any) -> LabelGrid:
        return LabelGridConfig.model_validate({"preset": name, **changes}).grid

    @classmethod
    def from_manifest(cls, manifest: dict, shots: ShotRule | None = None) -> LabelGrid:
        """The grid a dataset manifest records (``label``); ``shots`` overrides its shot rule."""
        label = manifest.get("label")
        if not isinstance(label, dict):
            raise InputError("manifest.json: no 'label' block (rebuild the dataset with this ecgka)")
        try:
            cfg = LabelGridConfig.model_validate({k: label[k] for k in ("name", "unit", "lo", "hi", "step", "shots")})
        except (KeyError, ValueError) as exc:
            raise InputError(f"manifest.json: bad 'label' block ({exc}); rebuild the dataset") from None
        grid = cfg.grid
        return grid if shots is None else grid.with_shots(shots)

    def with_shots(self, shots: ShotRule) -> LabelGrid:
        return LabelGrid(self.lo, self.hi, self.step, self.name, self.unit, shots)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``label`` block."""
        return {"name": self.name, "unit": self.unit, "lo": self.lo, "hi": self.hi, "step": self.step,
                "n_bins": self.n_bins, "half_way": HALF_WAY, "shots": self.shots.model_dump(mode="json")}

    @property
    def n_bins(self) -> int:
        return int(np.rint((self.hi - self.lo) / self.step)) + 1

    @property
    def centres(self) -> np.ndarray:
        """The grid values as exact decimals (no accumulated float drift)."""
        return np.round(self.lo + self.step * np.arange(self.n_bins), 10)

    def centre(self, index) -> np.ndarray:
        return np.round(self.lo + self.step * np.asarray(index, dtype=np.float64), 10)

    def tolerance(self, dtype) -> float:
        """The storage precision of ``dtype`` labels, in bins (see the half-way rule)."""
        return _tolerance(dtype, max(abs(self.lo), abs(self.hi), self.step), self.step)

    def _position(self, values: np.ndarray) -> np.ndarray:
        tol = self.tolerance(values.dtype)
        return (np.asarray(values, dtype=np.float64) - self.lo) / self.step + (0.5 + tol)

    def bin_index(self, values) -> np.ndarray:
        """Bin of each label (int64; may lie outside ``[0, n_bins)`` for labels off the grid's range)."""
        values = np.asarray(values)
        return np.floor(self._position(values)).astype(np.int64)

    def clipped_index(self, values) -> np.ndarray:
        """``bin_index`` clipped to the grid (labels beyond an end count in the end bin)."""
        return np.clip(self.bin_index(values), 0, self.n_bins - 1)

    def bin_index_torch(self, values):
        """``bin_index`` for a tensor, on its device (float64 arithmetic, the same bins as numpy)."""
        import torch

        tol = self.tolerance(numpy_dtype(values.dtype))
        position = (values.detach().to(torch.float64) - self.lo) / self.step + (0.5 + tol)
        return torch.floor(position).long()

    def clipped_index_torch(self, values):
        return self.bin_index_torch(values).clamp(0, self.n_bins - 1)

    def cell_index(self, values, width: float | None = None, lo: float | None = None) -> np.ndarray:
        """Index of the half-open cell ``[lo + i w, lo + (i + 1) w)`` holding each value (histogram cells
        whose edges are grid values; a value on an edge, within storage precision, opens the next cell)."""
        width = self.step if width is None else width
        lo = self.lo if lo is None else lo
        values = np.asarray(values)
        tol = _tolerance(values.dtype, max(abs(self.lo), abs(self.hi), width), width)
        return np.floor((values.astype(np.float64) - lo) / width + tol).astype(np.int64)

    def counts(self, values) -> np.ndarray:
        """Number of labels per bin (length ``n_bins``); labels outside the grid are an error."""
        idx = self.bin_index(values)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_bins):
            bad = np.asarray(values)[(idx < 0) | (idx >= self.n_bins)][0]
            raise InputError(f"{self.name} {float(bad):g} lies outside the label grid {self.lo:g}-{self.hi:g}")
        return np.bincount(idx, minlength=self.n_bins)

    def shot_groups(self, train_counts) -> dict[str, list[int]]:
        return self.shots.groups(train_counts)

    def assign_groups(self, labels, train_counts) -> np.ndarray:
        """Shot group of each label from the training count of its bin (0 off the counted range)."""
        train_counts = np.asarray(train_counts)
        idx = self.bin_index(labels)
        inside = (idx >= 0) & (idx < train_counts.size)
        count = np.where(inside, train_counts[np.clip(idx, 0, max(train_counts.size - 1, 0))], 0)
        return self.shots.group_of_counts(count, n_max=float(train_counts.max(initial=0)))


def _tolerance(dtype, magnitude: float, width: float) -> float:
    """``_ULPS`` ulps of ``dtype`` at ``magnitude``, in units of ``width`` (capped at ``_MAX_TOL``)."""
    dtype = np.dtype(dtype)
    eps = float(np.finfo(dtype).eps) if dtype.kind == "f" else 0.0
    eps = max(eps, float(np.finfo(np.float64).eps))
    return min(_ULPS * eps * magnitude / width, _MAX_TOL)


def numpy_dtype(torch_dtype) -> np.dtype:
    import torch

    return {torch.float16: np.float16, torch.bfloat16: np.float32, torch.float32: np.float32,
            torch.float64: np.float64}.get(torch_dtype, np.float64)


def as_grid(label_range) -> LabelGrid:
    """A ``LabelGrid`` from itself or from a ``(lo, hi, step)`` triple (the Python API's short form)."""
    if isinstance(label_range, LabelGrid):
        return label_range
    try:
        lo, hi, step = (float(v) for v in label_range)
    except (TypeError, ValueError):
        raise ConfigError(f"label range must be a LabelGrid or (lo, hi, step), got {label_range!r}") from None
    return LabelGrid(lo, hi, step)
