"""Pair each ECG with the potassium result of the same subject nearest in time within a window.

Vectorised with ``pandas.merge_asof`` (backward and forward per item class), so pairing 800k ECGs with
millions of labs takes seconds. Each ECG appears at most once in the output; a lab may serve several
ECGs (different ECGs of one draw). Window bounds are inclusive. Several labs of one class at one charttime
count as one: the lowest value (then the lower item id), before and after the ECG alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecgka.data.config import PairingConfig
from ecgka.data.labs import LabTable

PAIR_COLUMNS = ("lab_time_s", "itemid", "potassium", "delta_s")


def _nearest(ecgs: pd.DataFrame, labs: pd.DataFrame, before_s: int, after_s: int) -> pd.DataFrame:
    """Nearest lab per ECG within [t - before, t + after]; equal distance: the earlier lab. ``labs`` holds
    one lab per subject and time (``_as_frame``), so several labs at one charttime resolve alike on both sides."""
    cols = ["lab_time_s", "itemid", "potassium"]
    back = pd.merge_asof(ecgs, labs, left_on="time_s", right_on="lab_time_s", by="subject_id",
                         direction="backward", tolerance=before_s, allow_exact_matches=True)
    fwd = pd.merge_asof(ecgs, labs, left_on="time_s", right_on="lab_time_s", by="subject_id",
                        direction="forward", tolerance=after_s, allow_exact_matches=True)
    d_back = (back["time_s"] - back["lab_time_s"]).to_numpy(dtype=np.float64)
    d_fwd = (fwd["lab_time_s"] - fwd["time_s"]).to_numpy(dtype=np.float64)
    use_fwd = np.isnan(d_back) | (d_fwd < d_back)
    out = back[cols].copy()
    out.loc[use_fwd, cols] = fwd.loc[use_fwd, cols].to_numpy()
    return out


def _as_frame(labs: LabTable, itemids: tuple[int, ...]) -> pd.DataFrame:
    """The labs of ``itemids``, one per subject and charttime: the same-time rule keeps the lowest value
    (haemolysis and handling only raise potassium), then the lower item id, so the ECG's both sides agree."""
    keep = np.isin(labs.itemid, np.asarray(itemids, dtype=np.int32))
    frame = pd.DataFrame({
        "subject_id": labs.subject_id[keep], "lab_time_s": labs.time_s[keep],
        "itemid": labs.itemid[keep].astype(np.float64), "potassium": labs.value[keep].astype(np.float64),
    })
    frame = frame.sort_values(["subject_id", "lab_time_s", "potassium", "itemid"], kind="stable")
    frame = frame.drop_duplicates(["subject_id", "lab_time_s"], keep="first")
    # merge_asof needs the 'on' key sorted globally
    return frame.sort_values(["lab_time_s", "subject_id"], kind="stable", ignore_index=True)


def pair_labs(ecgs: pd.DataFrame, labs: LabTable, primary: tuple[int, ...], secondary: tuple[int, ...],
              cfg: PairingConfig) -> pd.DataFrame:
    """``ecgs`` (``subject_id``, ``time_s``, any other columns) + ``lab_time_s, itemid, potassium, delta_s``.

    Unpaired ECGs have NaN in the lab columns. With ``prefer_primary``, a primary-item lab anywhere in the
    window wins; otherwise the nearest lab of either class wins (the primary item on equal distance).
    """
    before_s, after_s = int(round(cfg.window_before_min * 60)), int(round(cfg.window_after_min * 60))
    order = np.argsort(ecgs["time_s"].to_numpy(), kind="stable")
    base = ecgs.iloc[order].reset_index(drop=True)
    key = base[["subject_id", "time_s"]]
    prim = _nearest(key, _as_frame(labs, primary), before_s, after_s)
    if secondary:
        sec = _nearest(key, _as_frame(labs, secondary), before_s, after_s)
        d_p = (prim["lab_time_s"] - key["time_s"]).abs().to_numpy(dtype=np.float64)
        d_s = (sec["lab_time_s"] - key["time_s"]).abs().to_numpy(dtype=np.float64)
        if cfg.prefer_primary:
            use_sec = np.isnan(d_p) & ~np.isnan(d_s)
        else:
            use_sec = ~np.isnan(d_s) & (np.isnan(d_p) | (d_s < d_p))
        prim.loc[use_sec] = sec.loc[use_sec].to_numpy()
    out = pd.concat([base, prim.reset_index(drop=True)], axis=1)
    out["delta_s"] = out["lab_time_s"] - out["time_s"]
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    return out.iloc[restore].reset_index(drop=True)
