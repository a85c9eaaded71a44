"""Named fields shared by the dataset shards, the data loader, the trainer and the evaluator."""

from __future__ import annotations

from enum import Enum


class Col(str, Enum):
    """Columns of an ECG-Ka-DIR shard (``DIR/<split>/part-NNNNN.parquet``)."""

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


class Batch(str, Enum):
    """Keys of a training/evaluation batch (a dict of tensors)."""

    SIGNAL = "signal"  # float32 [B, leads, samples], z-scored per sample and lead
    TARGET = "potassium"  # float32 [B]
    SUBJECT_ID = "subject_id"  # int64 [B]
    SAMPLE_ID = "sample_id"  # int64 [B]
    WEIGHT = "weight"  # float32 [B], optional per-sample weight


SPLITS = ("train", "val", "test")
