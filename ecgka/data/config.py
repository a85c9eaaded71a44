"""The typed build config (``configs/data/ecg_ka_dir.yaml``): every rule of ``ecgka build`` with its default.

The resolved config is saved in the manifest and hashed into the dataset fingerprint, so any change of
a rule re-runs the build.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from ecgka.config import ConfigModel
from ecgka.labels import LabelGridConfig

LAB_FORMATS = ("auto", "labevents", "simple")
SIMPLE_FIELDS = ("subject_id", "charttime", "potassium", "itemid")


class LabsConfig(ConfigModel):
    """Which lab rows count as a usable potassium result, and how a lab file's columns are read."""

    # labevents: MIMIC's columns (a full export or an incremental one of new rows only); simple: a table of
    # subject_id, charttime, potassium[, itemid] named by simple_columns (rows without itemid count as the
    # first primary item); auto: labevents when its columns are there, else simple
    format: str = "auto"
    simple_columns: dict[str, str] = {f: f for f in SIMPLE_FIELDS}  # ecgka field -> column name in the file

    primary_itemids: list[int] = [50971]  # Potassium, Blood, Chemistry
    secondary_itemids: list[int] = [50822]  # Potassium, Whole Blood, Blood Gas
    # with --d-labitems: potassium items found by label; blood ones take their rank from their category
    # (newer 52xxx chemistry codes are primary), the others (urine, body fluids) are read only to be counted
    # as dropped "not_blood"
    label_pattern: str = r"^\s*potassium\s*(?:,|$)"  # "Potassium", "Potassium, Whole Blood", "Potassium, Urine"
    blood_fluids: list[str] = ["Blood"]
    primary_categories: list[str] = ["Chemistry"]  # serum/plasma (case-insensitive d_labitems.category)
    secondary_categories: list[str] = ["Blood Gas"]  # whole blood; blood items of any other category too
    lo: float = 1.5  # plausible range, mmol/L (inclusive)
    hi: float = 10.0
    drop_hemolysed: bool = True
    hemolysis_pattern: str = r"ha?emoly"  # a mention of haemolysis
    # a negated mention ("no evidence of hemolysis", "non-hemolyzed", "hemolysis: none"); a comment is
    # dropped when at least one mention is left after removing the negated ones
    hemolysis_negation_pattern: str = (
        r"\b(?:no|not|non|without|negative\s+for|free\s+of)\b[\s-]*"
        r"(?:(?:evidence|signs?|any|visible|apparent|significant|detectable|of|for)\s+)*ha?emoly\w*"
        r"|ha?emoly\w*\s*[:=-]?\s*(?:none|absent|negative|not\s+(?:present|detected|seen|noted))\b"
    )
    # a retraction: a comment like these on a row without a numeric value withdraws the lab (any earlier value of
    # the same subject, charttime and item pairs with nothing); "" switches the rule off
    retraction_pattern: str = (
        r"\berror\b.*\bpreviously\s+reported\b|\bresult\s+removed\b|\bsee\s+correct(?:ed|ion)\b"
        r"|\bretracted\b|\bcorrected\s+report\b"
    )
    drop_duplicates: bool = True  # same subject, time, item and value
    csv_block_bytes: int = Field(16 << 20, ge=1 << 16)  # streamed CSV block size (bounds memory)
    parquet_batch_rows: int = Field(1 << 20, ge=1024)
    newlines_in_values: bool = True  # quoted comments may span lines
    csv_threads: bool = False  # True: parallel parse with read-ahead (faster on many cores, more memory)

    @field_validator("label_pattern", "hemolysis_pattern", "hemolysis_negation_pattern", "retraction_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return v

    @model_validator(mode="after")
    def _check(self) -> LabsConfig:
        if self.format not in LAB_FORMATS:
            raise ValueError(f"format must be one of {', '.join(LAB_FORMATS)}, got {self.format!r}")
        unknown = sorted(set(self.simple_columns) - set(SIMPLE_FIELDS))
        if unknown:
            raise ValueError(f"simple_columns: unknown field(s) {unknown} (fields: {', '.join(SIMPLE_FIELDS)})")
        if not self.lo < self.hi:
            raise ValueError(f"lo ({self.lo}) must be below hi ({self.hi})")
        if not self.primary_itemids:
            raise ValueError("primary_itemids must not be empty")
        both = {c.lower() for c in self.primary_categories} & {c.lower() for c in self.secondary_categories}
        if both:
            raise ValueError(f"categories in both primary_categories and secondary_categories: {sorted(both)}")
        return self


class PairingConfig(ConfigModel):
    """Nearest lab of the same subject within [ecg_time - before, ecg_time + after] (inclusive)."""

    window_before_min: float = Field(60.0, ge=0)
    window_after_min: float = Field(60.0, ge=0)
    prefer_primary: bool = True  # a primary-item lab in the window wins over a nearer secondary one


class SignalConfig(ConfigModel):
    """Lead selection, quality control and cleaning of each paired record."""

    leads: list[str] = ["II"]  # by name (case-insensitive), never by position; up to all 12
    fs: int = Field(500, gt=0)
    n_samples: int = Field(5000, gt=0)
    resample: bool = False  # False: other rates are excluded (wrong_fs); True: resample to fs
    expected_n_leads: int | None = 12  # records with another lead count: wrong_lead_count (None: any)
    flat_std_mv: float = Field(0.01, ge=0)  # a selected lead with std below this is flat
    saturated_fraction: float = Field(0.02, gt=0, le=1)  # share of samples at the lead's min or max
    clean: bool = True  # neurokit2 ecg_clean (0.5 Hz high-pass + mains filter)
    clean_method: str = "neurokit"
    powerline_hz: float = Field(60.0, gt=0)  # US mains (MIMIC: Boston)
    fast_reader: bool = True  # numpy reader for MIMIC-format records (falls back to wfdb otherwise)

    @field_validator("leads")
    @classmethod
    def _leads(cls, v: list[str]) -> list[str]:
        if not v or len(v) > 12 or len({x.lower() for x in v}) != len(v):
            raise ValueError("leads must be 1 to 12 distinct lead names")
        return v


class SplitConfig(ConfigModel):
    """Subject-disjoint splits: balanced val/test over label bins, natural train."""

    seed: int = 0  # label bins and shot groups: BuildConfig.label (ecgka.labels.LabelGrid)
    per_bin_cap: int = Field(60, ge=1)  # per split and bin (0 would leave val and test empty)
    # (the paper: 5,098 each over ~86 bins)
    # at most this share of a bin's subjects goes to val+test, so train keeps every bin (1.0: a rare bin
    # may go wholly to val/test)
    holdout_max_fraction: float = Field(0.5, ge=0, le=1)


class VariantsConfig(ConfigModel):
    """Training sets of controlled imbalance ratio (n_max / n_min over non-empty bins), val/test fixed."""

    ratios: list[float] = []  # e.g. [10, 20, 50, 100, 200, 500, 1000, 2000] for eight datasets
    seed: int = 0

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(r < 1 for r in v):
            raise ValueError("imbalance ratios must be >= 1")
        return v


class ShardConfig(ConfigModel):
    """Work units and Parquet layout."""

    chunk_records: int = Field(512, ge=1)  # records per task (one task -> one work part)
    row_group_rows: int = Field(1024, ge=1)  # ~10 MB of lead-II signal per row group
    part_rows: int = Field(16384, ge=1)  # rows per part-NNNNN.parquet
    compression: str = "zstd"
    compression_level: int = 3


class BuildConfig(ConfigModel):
    label: LabelGridConfig = LabelGridConfig()  # name, unit, grid and shot rule (`label: age`: the age grid)
    labs: LabsConfig = LabsConfig()
    pairing: PairingConfig = PairingConfig()
    signal: SignalConfig = SignalConfig()
    split: SplitConfig = SplitConfig()
    variants: VariantsConfig = VariantsConfig()
    shards: ShardConfig = ShardConfig()
    keep_work: bool = False  # keep the resumable work folder after a successful build

    @model_validator(mode="after")
    def _label_range(self) -> BuildConfig:
        if self.label.lo > self.labs.lo or self.label.hi < self.labs.hi:
            raise ValueError(f"label.lo/hi ({self.label.lo:g}-{self.label.hi:g}) must cover labs.lo/hi "
                             f"({self.labs.lo:g}-{self.labs.hi:g})")
        return self
