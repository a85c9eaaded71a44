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
