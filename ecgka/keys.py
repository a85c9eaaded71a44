"""Named fields shared by the dataset shards, the data loader, the trainer and the evaluator."""

from __future__ import annotations

from enum import Enum


class Col(str, Enum):
    """Columns of an ECG-Ka-DIR shard (``DIR/split=<split>/part-NNNNN.parquet``)."""

    SAMPLE_ID = "sample_id"
    SUBJECT_ID = "subject_id"
    STUDY_ID = "study_id"
    ECG_TIME = "ecg_time"
    LAB_TIME = "lab_time"
    DELTA_MINUTES = "delta_minutes"
    ITEMID = "itemid"
    POTASSIUM = "potassium"
    LEADS = "leads"
    FS = "fs"
    SIGNAL = "signal"
    # subgroups (``ecgka.data.subgroups``; "unknown" / null when the build had no patients/transfers/creatinine)
    SEX = "sex"
    AGE = "age"
    CARE_SETTING = "care_setting"
    EGFR_STAGE = "egfr_stage"


SUBGROUP_COLS = (Col.SEX, Col.AGE, Col.CARE_SETTING, Col.EGFR_STAGE)


SPLITS = ("train", "val", "test")


class PredCol(str, Enum):
    """Columns of ``RUN/eval/<split>/predictions.parquet`` (and of ``ecgka.training.predict``)."""

    SAMPLE_ID = "sample_id"
    SUBJECT_ID = "subject_id"
    LABEL = "label"
    PREDICTION = "prediction"


UNCERTAINTY_LEVELS = (0.80, 0.90, 0.95)  # nominal coverage of the conformal intervals (``ecgka.metrics.conformal``)


def interval_columns(level: float) -> tuple[str, str]:
    """The (lower, upper) interval columns at a nominal level: ``interval_columns(0.9) == ("k_lo_90", "k_hi_90")``."""
    pct = round(float(level) * 100, 6)
    tag = f"{pct:g}".replace(".", "_")
    return f"k_lo_{tag}", f"k_hi_{tag}"


def set_column(level: float) -> str:
    """The accepted-set column at a nominal level: ``set_column(0.9) == "k_set_90"`` (a list of ``{lo, hi, hi_open}``)."""
    return interval_columns(level)[0].replace("k_lo_", "k_set_", 1)


PROBABILITY_COLUMNS = ("p_hypo", "p_hyper", "p_severe_hypo", "p_severe_hyper")  # p_<clinical condition name>
UNCERTAINTY_COLUMNS = tuple(c for level in UNCERTAINTY_LEVELS for c in interval_columns(level)) + PROBABILITY_COLUMNS
SET_COLUMNS = tuple(set_column(level) for level in UNCERTAINTY_LEVELS)  # after UNCERTAINTY_COLUMNS (list columns)
