"""The stand-in written by ``ecgka synth``: MIMIC layout, WFDB read-back, CSV columns, physiology, labs.

One stand-in of 400 subjects (~1,250 records) is generated once for the module; every check reads the
files as a MIMIC user's code would (wfdb, pandas), never the generator's internals.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgka.standin import (
    D_LABITEMS_COLUMNS,
    LAB_COLUMNS,
    LEADS,
    MEASUREMENT_COLUMNS,
    RECORD_LIST_COLUMNS,
    generate_standin,
)

# Per-lead SD (mV) over the real MIMIC-IV-ECG data (../shared/reference/mimic-iv.md)
REAL_SD = dict(zip(LEADS, [0.155, 0.158, 0.166, 0.133, 0.143, 0.141, 0.207, 0.282, 0.284, 0.253, 0.222, 0.197], strict=True))
REAL_MEASUREMENT_COLUMNS = (
    "subject_id,study_id,cart_id,ecg_time,"
    + ",".join(f"report_{i}" for i in range(18))
    + ",bandwidth,filtering,rr_interval,p_onset,p_end,qrs_onset,qrs_end,t_end,p_axis,qrs_axis,t_axis"
).split(",")
REAL_LAB_COLUMNS = (
    "labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,charttime,storetime,value,"
    "valuenum,valueuom,ref_range_lower,ref_range_upper,flag,priority,comments"
).split(",")
MIMIC_EXAMPLE = "mimic_layout_from_ptb/files/p1999/p19999999/s49999999/49999999"
# one regex per header line kind, written from the real header in mimic-iv.md
RECORD_LINE = re.compile(r"^(\d{8}) 12 500 5000 (\d{2}:\d{2}:\d{2}) (\d{2}/\d{2}/\d{4})$")
SIGNAL_LINE = re.compile(r"^(\d{8})\.dat 16 200\.0\(0\)/mV 16 0 (-?\d+) (\d+) 0 (\S+)$")
COMMENT_LINE = re.compile(r"^# <subject_id>: (\d{8})$")


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "standin"
    summary = generate_standin(out, subjects=400, seed=11, workers=2)
    assert summary["records"] > 900 and summary["subjects"] == 400
    return out


@pytest.fixture(scope="module")
def record_list(standin) -> pd.DataFrame:
    return pd.read_csv(standin / "ecg" / "record_list.csv", parse_dates=["ecg_time"])


@pytest.fixture(scope="module")
def labs(standin) -> pd.DataFrame:
    return pd.read_csv(standin / "hosp" / "labevents.csv.gz", dtype={"value": str, "comments": str})


@pytest.fixture(scope="module")
def paired(record_list, labs) -> pd.DataFrame:
    """Each ECG with its nearest chemistry potassium (50971) within one hour, as a build would pair them."""
    k = labs[labs.itemid == 50971].assign(charttime=lambda d: pd.to_datetime(d.charttime))
    m = record_list.merge(k[["subject_id", "charttime", "valuenum", "comments"]], on="subject_id")
    m["dt"] = (m.charttime - m.ecg_time).abs().dt.total_seconds() / 60
    return m[m.dt <= 60].sort_values("dt").drop_duplicates("study_id")


def test_csv_columns_are_exactly_the_real_ones(standin):
    assert list(RECORD_LIST_COLUMNS) == "subject_id,study_id,file_name,ecg_time,path".split(",")
    assert pd.read_csv(standin / "ecg" / "record_list.csv", nrows=1).columns.tolist() == list(RECORD_LIST_COLUMNS)
    mm = pd.read_csv(standin / "ecg" / "machine_measurements.csv", nrows=1)
    assert mm.columns.tolist() == REAL_MEASUREMENT_COLUMNS == list(MEASUREMENT_COLUMNS)
    assert pd.read_csv(standin / "hosp" / "labevents.csv.gz", nrows=1).columns.tolist() == REAL_LAB_COLUMNS
    assert list(LAB_COLUMNS) == REAL_LAB_COLUMNS
    items = pd.read_csv(standin / "hosp" / "d_labitems.csv.gz")
    assert items.columns.tolist() == list(D_LABITEMS_COLUMNS) == ["itemid", "label", "fluid", "category"]
    links = pd.read_csv(standin / "ecg" / "waveform_note_links.csv")
    assert links.columns.tolist() == "subject_id,study_id,waveform_path,note_id,note_seq,charttime".split(",")
    rl = pd.read_csv(standin / "ecg" / "record_list.csv").set_index("study_id")
    assert 0.2 < len(links) / len(rl) < 0.6
    assert (links.waveform_path == rl.loc[links.study_id, "path"].to_numpy()).all()


def test_record_list_ids_paths_and_times(standin, record_list):
    rl = record_list
    assert rl.subject_id.between(10_000_000, 19_999_999).all()
    assert rl.study_id.between(40_000_000, 49_999_999).all() and rl.study_id.is_unique
    assert (rl.file_name == rl.study_id).all()
    assert (rl.ecg_time.dt.second == 0).all() and rl.ecg_time.dt.year.between(2110, 2210).all()
    expected = [f"files/p{str(s)[:4]}/p{s}/s{t}/{t}" for s, t in zip(rl.subject_id, rl.study_id, strict=True)]
    assert rl.path.tolist() == expected
    for p in rl.path.sample(20, random_state=0):
        assert (standin / "ecg" / f"{p}.hea").is_file() and (standin / "ecg" / f"{p}.dat").stat().st_size == 120_000
    per_subject = rl.groupby("subject_id").size()
    assert 2 <= per_subject.median() <= 5 and per_subject.max() >= 6


def test_sha256sums_cover_every_file(standin):
    import hashlib

    root = standin / "ecg"
    lines = (root / "SHA256SUMS.txt").read_text().splitlines()
    listed = dict(reversed(line.split(" ", 1)) for line in lines)
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {"SHA256SUMS.txt"}
    assert set(listed) == files and [line.split(" ", 1)[1] for line in lines] == sorted(files)
    for name in [*sorted(files)[:6], "record_list.csv", "machine_measurements.csv"]:
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == listed[name]


def test_records_read_back_with_wfdb(standin, record_list):
    for row in record_list.sample(8, random_state=1).itertuples():
        rec = wfdb.rdrecord(str(standin / "ecg" / row.path))
        assert rec.sig_name == list(LEADS) and rec.n_sig == 12
        assert (rec.fs, rec.sig_len) == (500, 5000)
        assert rec.fmt == ["16"] * 12 and rec.adc_gain == [200.0] * 12 and rec.baseline == [0] * 12
        assert rec.units == ["mV"] * 12 and rec.comments == [f"<subject_id>: {row.subject_id}"]
        assert pd.Timestamp.combine(rec.base_date, rec.base_time) == row.ecg_time
        raw = np.fromfile(standin / "ecg" / f"{row.path}.dat", dtype="<i2").reshape(5000, 12)
        np.testing.assert_allclose(rec.p_signal, np.where(raw == -32768, np.nan, raw / 200.0))  # NaN = invalid
        assert rec.init_value == raw[0].tolist()
        assert rec.checksum == (raw.astype(np.int64).sum(0) % 65536).tolist()
        dig = wfdb.rdrecord(str(standin / "ecg" / row.path), physical=False)
        assert dig.checksum == (dig.d_signal.astype(np.int64).sum(0) % 65536).tolist()


def _placeholders(line: str) -> str:
    return re.sub(r"-?\d+", "N", line)


def test_header_lines_match_the_real_format(standin, record_list, wfdb_fixtures):
    real = (wfdb_fixtures / f"{MIMIC_EXAMPLE}.hea").read_text().splitlines()
    for row in record_list.sample(10, random_state=2).itertuples():
        ours = (standin / "ecg" / f"{row.path}.hea").read_text()
        assert ours.endswith("\n") and "\r" not in ours
        lines = ours.splitlines()
        assert len(lines) == len(real) == 14
        head = RECORD_LINE.match(lines[0])
        assert head and int(head[1]) == row.study_id
        assert f"{row.ecg_time:%H:%M:%S} {row.ecg_time:%d/%m/%Y}" == f"{head[2]} {head[3]}"
        names = [SIGNAL_LINE.match(line)[4] for line in lines[1:13]]
        assert names == list(LEADS) == [SIGNAL_LINE.match(line)[4] for line in real[1:13]]
        assert COMMENT_LINE.match(lines[13])[1] == str(row.subject_id)
        # same tokens as the real header once the numbers are masked
        assert [_placeholders(x) for x in lines] == [_placeholders(x) for x in real]
    assert RECORD_LINE.match(real[0]) and COMMENT_LINE.match(real[13])


@pytest.fixture(scope="module")
def signals(standin, record_list) -> dict[str, np.ndarray]:
    """Digital samples [5000, 12] of every record, read with numpy (the .dat layout is tested above)."""
    return {p: np.fromfile(standin / "ecg" / f"{p}.dat", dtype="<i2").reshape(5000, 12) for p in record_list.path}


def test_some_records_have_invalid_samples_read_as_nan(standin, signals):
    bad = [p for p, d in signals.items() if (d == -32768).any()]
    assert 1 <= len(bad) <= 0.03 * len(signals)
    rec = wfdb.rdrecord(str(standin / "ecg" / bad[0]))
    assert np.isnan(rec.p_signal).sum() == (signals[bad[0]] == -32768).sum()


def valid(signals: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [d for d in signals.values() if not (d == -32768).any()]


def test_limb_lead_identities_hold(signals):
    for d in valid(signals)[:40]:
        d = d.astype(float)
        lead = dict(zip(LEADS, d.T, strict=True))
        tol = 1.5  # rounding to 1/200 mV of each of the three leads involved
        assert np.abs(lead["III"] - (lead["II"] - lead["I"])).max() <= tol
        assert np.abs(lead["aVR"] + (lead["I"] + lead["II"]) / 2).max() <= tol
        assert np.abs(lead["aVL"] - (lead["I"] - lead["II"] / 2)).max() <= tol
        assert np.abs(lead["aVF"] - (lead["II"] - lead["I"] / 2)).max() <= tol
        assert np.abs(lead["aVR"] + lead["aVL"] + lead["aVF"]).max() <= 2 * tol


def test_per_lead_sd_close_to_real(signals):
    sd = np.sqrt(np.mean([(d / 200.0).var(0) for d in valid(signals)], 0))
    for name, got in zip(LEADS, sd, strict=True):
        assert got == pytest.approx(REAL_SD[name], rel=0.2), name
    assert np.argmax(sd) in (7, 8)  # V2/V3 largest, as in MIMIC


def test_label_distribution_shape(record_list, paired):
    frac_paired = len(paired) / len(record_list)
    assert 0.35 <= frac_paired <= 0.7  # "about half of ECGs have a potassium lab within an hour"
    k = paired.valuenum[(paired.valuenum > 1.5) & (paired.valuenum < 10)]
    counts = np.histogram(k, bins=np.arange(1.5, 10.0001, 0.1))[0]
    mode = 1.5 + 0.1 * counts.argmax()
    assert 3.8 <= mode <= 4.4
    assert 0.75 <= k.between(3.5, 5.0).mean() <= 0.95
    assert (k < 3.0).sum() >= 3 and (k >= 6.0).sum() >= 3  # sparse tails
    assert k.min() < 2.8 and k.max() > 6.5


def test_lab_quirks_are_present(labs, record_list):
    k = labs[labs.itemid == 50971]
    assert ((labs.value == "___") & labs.valuenum.notna()).sum() > 0
    assert labs.hadm_id.isna().any() and labs.flag.isna().any() and labs.priority.isna().any()
    chart, store = pd.to_datetime(labs.charttime), pd.to_datetime(labs.storetime)
    assert (store[store.notna()] > chart[store.notna()]).all()
    comments = k.comments.fillna("")
    haem = comments.str.contains("HEMOLYSIS FALSELY ELEVATES K|Slightly hemolyzed|Moderately hemolyzed")
    assert 0.005 <= haem.mean() <= 0.04
    assert k.valuenum[haem].median() > k.valuenum[~haem].median()  # falsely elevated
    assert (comments == "Specimen not hemolyzed").any()
    assert ((k.valuenum <= 0.5) | (k.valuenum > 30)).sum() >= 1  # implausible values
    dup = labs.drop(columns="labevent_id").duplicated()
    assert 0 < dup.sum() < 0.02 * len(labs) and labs.labevent_id.is_unique
    assert {50822, 50983, 50912, 50931, 50902, 50882, 51097} <= set(labs.itemid)
    assert (set(labs.subject_id) - set(record_list.subject_id))  # subjects with labs but no ECG
    assert labs.order_provider_id.dropna().str.fullmatch(r"P[0-9A-Z]{5}").all()


def test_some_ecgs_have_no_potassium_lab_for_a_day(record_list, labs):
    k = labs[labs.itemid == 50971].assign(t=lambda d: pd.to_datetime(d.charttime)).sort_values("t")
    near = pd.merge_asof(record_list.sort_values("ecg_time"), k[["subject_id", "t"]], left_on="ecg_time",
                         right_on="t", by="subject_id", direction="nearest")
    gap_h = (near.t - near.ecg_time).abs().dt.total_seconds() / 3600
    assert 0.1 <= (gap_h.isna() | (gap_h > 24)).mean() <= 0.5


def test_blood_gas_and_chemistry_potassium_differ_realistically(labs):
    k = labs[labs.itemid.isin([50971, 50822])].assign(t=lambda d: pd.to_datetime(d.charttime))
    chem, gas = k[k.itemid == 50971], k[k.itemid == 50822]
    m = pd.merge_asof(gas.sort_values("t"), chem.sort_values("t"), on="t", by="subject_id",
                      tolerance=pd.Timedelta("1h"), direction="nearest", suffixes=("_g", "_c")).dropna(
        subset=["valuenum_c"])
    d = (m.valuenum_g - m.valuenum_c)
    d = d[d.abs() < 3]
    assert len(d) > 50 and 0.25 <= d.std() <= 0.6


def test_d_labitems_lets_potassium_be_found_by_label_and_fluid(standin):
    items = pd.read_csv(standin / "hosp" / "d_labitems.csv.gz")
    blood_k = items[items.label.str.startswith("Potassium") & (items.fluid == "Blood")]
    assert {50971, 50822} <= set(blood_k.itemid)
    assert items.set_index("itemid").loc[51097, "fluid"] == "Urine"
    assert items.set_index("itemid").loc[50822, "category"] == "Blood Gas"


def test_machine_measurements_are_plausible(standin, record_list):
    mm = pd.read_csv(standin / "ecg" / "machine_measurements.csv")
    assert mm.study_id.tolist() == record_list.study_id.tolist()
    assert mm.report_0.notna().all() and mm.report_17.isna().all()
    rr = mm.rr_interval[mm.rr_interval < 5000]
    assert 700 <= rr.median() <= 950
    qrs = (mm.qrs_end - mm.qrs_onset)[(mm.qrs_end < 5000) & (mm.qrs_onset < 5000)]
    assert 80 <= qrs.median() <= 115
    qt = (mm.t_end - mm.qrs_onset)[(mm.t_end < 5000) & (mm.qrs_onset < 5000)]
    assert 360 <= qt.median() <= 440
    assert (mm.p_onset == 29999).any()  # not measurable (atrial fibrillation)
    assert set(mm.bandwidth) == {"0.005-150 Hz"}


def t_wave_amplitude(signal: np.ndarray, fs: int = 500) -> float:
    """Median T-wave amplitude (mV) of a lead, from our own measurement on the cleaned signal.

    R peaks from neurokit2; T = the largest deflection 120 ms after R up to 450 ms (or 60 % of the RR
    interval), relative to the PR-segment level just before the QRS.
    """
    import neurokit2 as nk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = nk.ecg_clean(signal, sampling_rate=fs)
        _, info = nk.ecg_peaks(clean, sampling_rate=fs)
    r = info["ECG_R_Peaks"]
    amps = []
    for a, b in zip(r[:-1], r[1:], strict=False):
        if a < 0.1 * fs:
            continue
        seg = clean[a + int(0.12 * fs) : a + int(min(0.45 * fs, 0.6 * (b - a)))]
        if seg.size < 0.05 * fs:  # a spurious double detection, not a beat
            continue
        base = np.median(clean[a - int(0.08 * fs) : a - int(0.04 * fs)])
        amps.append(seg[np.argmax(np.abs(seg))] - base)
    return float(np.median(amps)) if amps else float("nan")


def test_hyperkalaemic_records_have_taller_t_waves_in_lead_ii(standin, paired, signals):
    complete = {p for p, d in signals.items() if not (d == -32768).any()}
    ok = paired[~paired.comments.fillna("").str.contains("hemoly|HEMOLY") & paired.path.isin(complete)]
    hyper = ok[ok.valuenum >= 5.5]
    normo = ok[ok.valuenum.between(3.8, 4.6)]
    pairs = hyper.merge(normo, on="subject_id", suffixes=("_hi", "_no")).drop_duplicates("study_id_hi")
    assert len(pairs) >= 6

    def lead_ii(path):
        return wfdb.rdrecord(str(standin / "ecg" / path), channel_names=["II"]).p_signal[:, 0]

    diffs = np.array([t_wave_amplitude(lead_ii(p.path_hi)) - t_wave_amplitude(lead_ii(p.path_no))
                      for p in pairs.itertuples()])
    diffs = diffs[~np.isnan(diffs)]
    assert np.median(diffs) > 0.03  # mV: measurably taller
    assert (diffs > 0).mean() >= 0.6  # in most, not all, patients (only about half show clear signs)


def test_t_wave_signal_is_learnable_but_not_trivial(standin, paired, signals):
    """T amplitude (lead II, measured on the signal) rises with the lab potassium, but weakly, and only
    some hyperkalaemic ECGs stand out: the label is not readable off one feature."""
    from scipy.stats import spearmanr

    ok = paired[paired.path.map(lambda p: not (signals[p] == -32768).any()) & paired.valuenum.between(1.5, 10)]
    normal = ok[ok.valuenum.between(3.8, 4.6)].sample(150, random_state=5)
    rest = ok[~ok.valuenum.between(3.8, 4.6)]
    sample = pd.concat([normal, rest])
    t = np.array([t_wave_amplitude(signals[p][:, 1] / 200.0) for p in sample.path])
    k = sample.valuenum.to_numpy()
    measured = ~np.isnan(t)
    assert measured.mean() > 0.95
    t, k = t[measured], k[measured]
    rho = spearmanr(k, t).correlation
    assert 0.1 < rho < 0.6
    above = t[k >= 5.5] > np.percentile(t[(k >= 3.8) & (k <= 4.6)], 90)
    assert len(above) >= 8 and 0.2 <= above.mean() <= 0.85
