"""Pairing edge cases: window bounds, asymmetric windows, item preference, several labs, none."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgka.data.config import PairingConfig
from ecgka.data.labs import LabTable
from ecgka.data.pairing import pair_labs

T0 = 1_000_000_000
PRIMARY, SECONDARY = (50971,), (50822,)


def labs(rows):
    """rows: (subject, offset_minutes from T0, itemid, value)."""
    if not rows:
        return LabTable.empty()
    s, m, i, v = zip(*rows, strict=True)
    return LabTable(np.array(s, np.int64), T0 + (np.array(m) * 60).astype(np.int64), np.array(i, np.int32),
                    np.array(v, np.float32)).sorted()


def ecgs(subjects, offsets_s=None):
    offsets_s = offsets_s if offsets_s is not None else [0] * len(subjects)
    return pd.DataFrame({"row": np.arange(len(subjects)), "subject_id": np.array(subjects, np.int64),
                         "time_s": T0 + np.array(offsets_s, np.int64)})


def pair(e, lab_rows, **kw):
    return pair_labs(e, labs(lab_rows), PRIMARY, SECONDARY, PairingConfig(**kw))


@pytest.mark.parametrize("offset_min, paired", [(-60, True), (60, True), (-60.0167, False), (60.0167, False),
                                                (0, True)])
def test_window_bounds_inclusive(offset_min, paired):
    out = pair(ecgs([1]), [(1, offset_min, 50971, 4.0)])
    assert out["lab_time_s"].notna().iat[0] == paired
    if paired:
        assert out["delta_s"].iat[0] == round(offset_min * 60)


def test_exact_second_bounds():
    e = ecgs([1, 1], [0, 10_000])
    rows = [(1, 60, 50971, 4.0)]  # +3600 s from the first ECG
    out = pair(e, rows)
    assert out["lab_time_s"].notna().tolist() == [True, False]
    e2 = ecgs([1], [1])  # lab is 3599 s after: inside; one second later ECG -> lab 3599 after
    assert pair(e2, rows)["lab_time_s"].notna().iat[0]
    e3 = ecgs([1], [-1])  # lab is 3601 s after: outside
    assert pair(e3, rows)["lab_time_s"].isna().iat[0]


def test_asymmetric_window():
    rows = [(1, -30, 50971, 4.0), (1, 200, 50971, 5.0)]
    out = pair(ecgs([1]), rows, window_before_min=0, window_after_min=240)
    assert out["potassium"].iat[0] == 5.0 and out["delta_s"].iat[0] == 200 * 60
    out = pair(ecgs([1]), rows, window_before_min=30, window_after_min=0)
    assert out["potassium"].iat[0] == 4.0 and out["delta_s"].iat[0] == -30 * 60


def test_nearest_of_several_labs():
    rows = [(1, -50, 50971, 3.0), (1, -5, 50971, 4.0), (1, 7, 50971, 5.0), (1, 40, 50971, 6.0)]
    out = pair(ecgs([1]), rows)
    assert out["potassium"].iat[0] == pytest.approx(4.0) and out["delta_s"].iat[0] == -300


def test_equal_distance_takes_earlier_lab():
    out = pair(ecgs([1]), [(1, -10, 50971, 3.0), (1, 10, 50971, 5.0)])
    assert out["potassium"].iat[0] == pytest.approx(3.0)


def test_primary_preferred_when_both_present():
    rows = [(1, 1, 50822, 3.0), (1, -45, 50971, 4.5)]
    out = pair(ecgs([1]), rows)
    assert out["itemid"].iat[0] == 50971 and out["potassium"].iat[0] == pytest.approx(4.5)
    out = pair(ecgs([1]), rows, prefer_primary=False)
    assert out["itemid"].iat[0] == 50822 and out["potassium"].iat[0] == pytest.approx(3.0)


def test_secondary_used_when_no_primary():
    out = pair(ecgs([1]), [(1, 20, 50822, 3.6), (1, 90, 50971, 4.5)])
    assert out["itemid"].iat[0] == 50822 and out["potassium"].iat[0] == pytest.approx(3.6)


def test_no_lab_and_other_subjects():
    rows = [(2, 0, 50971, 4.0), (3, 500, 50971, 4.0)]
    out = pair(ecgs([1, 2, 3]), rows)
    assert out["lab_time_s"].notna().tolist() == [False, True, False]
    assert out["subject_id"].tolist() == [1, 2, 3] and out["row"].tolist() == [0, 1, 2]
    assert len(pair(ecgs([1]), [])) == 1


def test_each_ecg_once_and_order_kept():
    rng = np.random.default_rng(0)
    n = 500
    e = ecgs(rng.integers(1, 40, n).tolist(), rng.integers(0, 10 * 86400, n).tolist())
    rows = [(int(s), float(m), int(i), float(v)) for s, m, i, v in zip(
        rng.integers(1, 40, 2000), rng.uniform(-100, 10 * 1440, 2000), rng.choice([50971, 50822], 2000),
        rng.uniform(2, 7, 2000), strict=True)]
    out = pair(e, rows)
    assert len(out) == n and out["row"].tolist() == list(range(n))
    # brute-force reference for prefer_primary=True
    lt = labs(rows)
    for k in rng.choice(n, 60, replace=False):
        subj, t = e["subject_id"].iat[k], e["time_s"].iat[k]
        d = lt.time_s - t
        ok = (lt.subject_id == subj) & (d >= -3600) & (d <= 3600)
        prim = ok & (lt.itemid == 50971)
        cand = prim if prim.any() else ok
        if not cand.any():
            assert np.isnan(out["lab_time_s"].iat[k])
            continue
        best = np.abs(d[cand]).min()
        assert abs(out["delta_s"].iat[k]) == best


def _brute(e, lab_rows, before, after, prefer_primary):
    """Reference: scan every lab of the subject."""
    out = []
    for subj, t in zip(e["subject_id"], e["time_s"], strict=True):
        cands = [(T0 + round(m * 60) - t, i, v) for s, m, i, v in lab_rows
                 if s == subj and -before * 60 <= T0 + round(m * 60) - t <= after * 60]
        if prefer_primary and any(c[1] in PRIMARY for c in cands):
            cands = [c for c in cands if c[1] in PRIMARY]
        out.append(min(abs(c[0]) for c in cands) if cands else None)
    return out


@settings(max_examples=60, deadline=None)
@given(
    labs_rows=st.lists(st.tuples(st.integers(1, 3), st.integers(-150, 150), st.sampled_from([50971, 50822]),
                                 st.floats(1.5, 10)), max_size=12),
    ecg_offsets=st.lists(st.tuples(st.integers(1, 3), st.integers(-3 * 3600, 3 * 3600)), min_size=1, max_size=6),
    before=st.integers(0, 120), after=st.integers(0, 120), prefer=st.booleans(),
)
def test_matches_brute_force(labs_rows, ecg_offsets, before, after, prefer):
    e = ecgs([s for s, _ in ecg_offsets], [o for _, o in ecg_offsets])
    out = pair(e, labs_rows, window_before_min=before, window_after_min=after, prefer_primary=prefer)
    got = [None if np.isnan(d) else abs(int(d)) for d in out["delta_s"]]
    assert got == _brute(e, labs_rows, before, after, prefer)
    if prefer:  # a primary lab in the window always wins
        primary_in_window = [w is not None for w in _brute(e, [r for r in labs_rows if r[2] in PRIMARY], before,
                                                             after, False)]
        assert [(i == 50971) for i, p in zip(out["itemid"], primary_in_window, strict=True) if p] == \
            [True] * sum(primary_in_window)


@pytest.mark.parametrize("side_min", [-20, 20])
def test_several_labs_at_one_charttime_give_the_lowest_on_both_sides(side_min):
    """Same rule before and after the ECG: the lowest value (haemolysis and handling only raise K)."""
    rows = [(1, side_min, 50971, 4.6), (1, side_min, 50971, 3.9), (1, side_min, 50971, 5.2)]
    out = pair(ecgs([1]), rows)
    assert out["potassium"].iat[0] == pytest.approx(3.9) and out["delta_s"].iat[0] == side_min * 60


@pytest.mark.parametrize("side_min", [-20, 20])
def test_same_time_tie_across_items_takes_lowest_value_then_lower_item(side_min):
    both_primary = (50971, 52610)
    rows = [(1, side_min, 52610, 4.0), (1, side_min, 50971, 4.0), (1, side_min, 52610, 4.4)]
    out = pair_labs(ecgs([1]), labs(rows), both_primary, SECONDARY, PairingConfig())
    assert out["itemid"].iat[0] == 50971 and out["potassium"].iat[0] == pytest.approx(4.0)


def test_nearer_blood_gas_does_not_beat_a_52xxx_chemistry_result(tmp_path):
    """With d_labitems, 52610 (Potassium, Blood, Chemistry) is primary: a nearer blood gas loses to it."""
    from ecgka.data.config import LabsConfig
    from ecgka.data.labs import select_items

    d = tmp_path / "d_labitems.csv"
    d.write_text("itemid,label,fluid,category\n52610,Potassium,Blood,Chemistry\n"
                 "50822,\"Potassium, Whole Blood\",Blood,Blood Gas\n")
    items = select_items(LabsConfig(), d)
    rows = [(1, 2, 50822, 5.9), (1, -40, 52610, 4.2)]
    out = pair_labs(ecgs([1]), labs(rows), items.primary, items.secondary, PairingConfig())
    assert out["itemid"].iat[0] == 52610 and out["potassium"].iat[0] == pytest.approx(4.2)
