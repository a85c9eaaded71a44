"""The dataset description every stage speaks: :class:`DatasetInfo`, and :class:`LabelHistogram`.

A dataset kind (``ecgka.data.kind`` for ECG-Ka-DIR folders, ``ecgka.age.kind`` for face images) describes
its data as a :class:`DatasetInfo`: the kind, the fingerprint, the label grid, the label histogram of each
split, the counts per split, the input's units (``signal``), where it came from (``source``) and its
lineage (``parent``). The trainer, ``ecgka evaluate`` (metrics.json's ``dataset`` block), the report and
the model store read it; :meth:`DatasetInfo.to_dict` / :meth:`DatasetInfo.from_dict` are its JSON form,
with the keys of a dataset manifest (``label``, ``counts``, ``label_histograms``, ``train_bin_counts``,
``n_max``, ``shot_groups``, ...), so an ECG manifest is read by the same function.

A :class:`LabelHistogram` is counts per bin of a label grid, ``{"lo", "step", "counts"}`` in JSON; its
bin centres are the grid's (:attr:`ecgka.labels.LabelGrid.centres`).

>>> from ecgka.labels import LabelGrid
>>> h = LabelHistogram.of(LabelGrid.preset("age"), [20.4, 20.6, 21.0])
>>> h.counts[20:22], h.centres()[20:22].tolist(), h.n_max
((1, 2), [20.0, 21.0], 2)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgka.errors import InputError
from ecgka.labels import LabelGrid, ShotRule

ECG_KIND = "ecg-ka-dir"  # the kind of a description that names none (metrics.json before kinds existed)


@dataclass(frozen=True)
class LabelHistogram:
    """Counts per bin of a label grid starting at ``lo`` with bins ``step`` wide."""

    lo: float
    step: float
    counts: tuple[int, ...]

    @classmethod
    def of(cls, grid: LabelGrid, values) -> LabelHistogram:
        """The histogram of ``values`` on ``grid`` (a label outside the grid is an error)."""
        return cls.from_counts(grid, grid.counts(np.asarray(values)))

    @classmethod
    def from_counts(cls, grid: LabelGrid, counts) -> LabelHistogram:
        return cls(float(grid.lo), float(grid.step), tuple(int(c) for c in np.asarray(counts).tolist()))

    @classmethod
    def from_dict(cls, data: Any, what: str = "histogram", counts: str = "counts") -> LabelHistogram:
        """From ``{"lo", "step", counts}`` (``counts``: the key of the counts, e.g. ``labels`` in metrics.json's
        ``figures.distributions``)."""
        try:
            return cls(float(data["lo"]), float(data["step"]), tuple(int(c) for c in data[counts]))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{what}: not a label histogram {{lo, step, {counts}}} (rebuild the dataset with this "
                             "ecgka)") from None

    def to_dict(self, counts: str = "counts") -> dict[str, Any]:
        return {"lo": self.lo, "step": self.step, counts: list(self.counts)}

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.counts, dtype=np.int64)

    @property
    def n_max(self) -> int:
        return max(self.counts, default=0)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def centres(self) -> np.ndarray:
        """The bin centres: the values of the grid these counts are on (``LabelGrid.centres``)."""
        if not self.counts:
            return np.zeros(0)
        return LabelGrid(self.lo, self.lo + self.step * (len(self.counts) - 1), self.step).centres

    def fits(self, grid: LabelGrid) -> bool:
        """Whether these are counts per bin of ``grid`` (same first bin, same width, one count per bin)."""
        return (len(self.counts) == grid.n_bins and math.isclose(self.lo, grid.lo, abs_tol=1e-9)
                and math.isclose(self.step, grid.step))


def _plain(value: Any) -> Any:
    """A JSON-ready copy of mappings and sequences (tuples become lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# JSON keys written as they are (the kind's own summary fields: ECG exclusions, lab drops, build config, ...)
DETAIL_KEYS = ("exclusions", "labs_dropped", "variant", "config", "digest")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: kind, identity, label grid and histograms, counts, units and lineage."""

    kind: str
    fingerprint: str | None
    grid: LabelGrid
    train_bins: LabelHistogram  # training counts per bin of ``grid``
    histograms: Mapping[str, LabelHistogram] = field(default_factory=dict)  # per split
    counts: Mapping[str, int] = field(default_factory=dict)  # samples per split (ECG: also record_list, ...)
    signal: Mapping[str, Any] | None = None  # the input: leads, fs, n_samples, unit, dtype (ECG); None: images
    source: Mapping[str, Any] | None = None  # where the data was read from (age: the CSV, the image root)
    parent: Any = None  # lineage: the version this one derives from (None: a first build)
    schema_version: int | None = None
    ecgka_version: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # DETAIL_KEYS the kind records
    matches_training: bool | None = None  # set by ``ecgka evaluate``: the run's own training dataset?

    def __post_init__(self) -> None:
        if not self.train_bins.fits(self.grid):
            raise InputError(f"train_bin_counts ({len(self.train_bins.counts)} bins from {self.train_bins.lo:g}) do "
                             f"not match the label grid ({self.grid.n_bins} bins from {self.grid.lo:g}); rebuild "
                             "the dataset")

    @classmethod
    def from_labels(cls, kind: str, grid: LabelGrid, labels: Mapping[str, np.ndarray], fingerprint: str | None,
                    **rest: Any) -> DatasetInfo:
        """The description of per-split label arrays on ``grid`` (a split without labels counts 0)."""
        histograms = {s: LabelHistogram.of(grid, v) for s, v in labels.items()}
        train = histograms.get("train") or LabelHistogram.from_counts(grid, np.zeros(grid.n_bins, np.int64))
        counts = {s: h.total for s, h in histograms.items()}
        return cls(kind=kind, fingerprint=fingerprint, grid=grid, train_bins=train, histograms=histograms,
                   counts={**rest.pop("counts", {}), **counts}, **rest)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], kind: str | None = None, what: str = "dataset") -> DatasetInfo:
        """A description from its JSON form: metrics.json's ``dataset`` block, or a dataset manifest
        (``kind``: the kind when the JSON names none; ECG-Ka-DIR by default)."""
        if not isinstance(data, Mapping):
            raise InputError(f"{what}: not a dataset description")
        grid = LabelGrid.from_manifest(dict(data))
        if not isinstance(data.get("train_bin_counts"), Mapping):
            raise InputError(f"{what}: no 'train_bin_counts' (rebuild the dataset with this ecgka)")
        hists = data.get("label_histograms") or {}
        return cls(
            kind=str(data.get("kind") or kind or ECG_KIND), fingerprint=data.get("fingerprint"), grid=grid,
            train_bins=LabelHistogram.from_dict(data["train_bin_counts"], f"{what}: train_bin_counts"),
            histograms={str(s): LabelHistogram.from_dict(h, f"{what}: label_histograms.{s}") for s, h in hists.items()},
            counts=dict(data.get("counts") or {}), signal=data.get("signal"), source=data.get("source"),
            parent=data.get("parent"), schema_version=data.get("schema_version"),
            ecgka_version=data.get("ecgka_version"),
            details={k: data[k] for k in DETAIL_KEYS if data.get(k) is not None},
            matches_training=data.get("matches_training"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (metrics.json's ``dataset`` block): the manifest's keys, plus ``kind``."""
        plain = ("kind", "fingerprint", "source", "parent", "schema_version", "ecgka_version", "signal", "counts")
        out = {name: _plain(getattr(self, name)) for name in plain}
        out.update({"label": self.grid.to_dict(), "label_histograms": {s: h.to_dict() for s, h in self.histograms.items()},
                    "train_bin_counts": self.train_bins.to_dict(), "n_max": self.n_max,
                    "shot_groups": self.shot_groups, **_plain(self.details)})
        if self.matches_training is not None:
            out["matches_training"] = self.matches_training
        return out

    @property
    def n_max(self) -> int:
        return self.train_bins.n_max

    @property
    def shot_groups(self) -> dict[str, list[int]]:
        """Bin indices of each shot group (``grid.shots`` on the training counts)."""
        return self.grid.shot_groups(self.train_bins.array)

    @property
    def unit(self) -> str:
        """The label's unit (the input's is ``signal["unit"]``)."""
        return self.grid.unit

    @property
    def n_train(self) -> int | None:
        n = self.counts.get("train")
        return int(n) if isinstance(n, int) else None

    def with_shots(self, shots: ShotRule) -> DatasetInfo:
        """The same dataset grouped by another shot rule."""
        return dataclasses.replace(self, grid=self.grid.with_shots(shots))

    def with_changes(self, **changes: Any) -> DatasetInfo:
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """Fingerprint, content digest (the fingerprint when the kind records none) and the parent's identity."""
        parent = self.parent
        if isinstance(parent, Mapping):
            parent = {k: parent.get(k) for k in ("fingerprint", "digest", "path")}
        return {"fingerprint": self.fingerprint, "digest": self.details.get("digest") or self.fingerprint,
                "parent": parent}


class SplitOf:
    """The part every split kind shares (ECG shards, face images): length, labels and ids read from the
    data it wraps (``self.data``)."""

    data: Any

    def __len__(self) -> int:
        return len(self.data)

    @property
    def labels(self) -> np.ndarray:
        return self.data.labels

    @property
    def sample_ids(self) -> np.ndarray:
        return self.data.sample_ids

    @property
    def subject_ids(self) -> np.ndarray:
        return self.data.subject_ids
