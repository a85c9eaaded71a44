"""Real public WFDB records (../shared/fixtures/wfdb, see its README): what a real reader meets.

Each test asserts what the fixture README says about the record: other formats (16, 80, 212),
lower-case and spaced lead names, sampling rates from 125 to 1000 Hz, two data files, a multi-segment
record with several samples per frame, NaN (invalid) samples, and the MIMIC-layout record.
"""

from __future__ import annotations

import hashlib
from datetime import date, time

import numpy as np
import pytest
import wfdb
from scipy.signal import resample_poly

from ecgka.standin import LEADS

MIMIC = "mimic_layout_from_ptb/files/p1999/p19999999/s49999999/49999999"


def read(root, name, **kw):
    return wfdb.rdrecord(str(root / name), **kw)


def test_fixture_files_match_their_checksums(wfdb_fixtures):
    lines = (wfdb_fixtures / "SHA256SUMS").read_text().split("\n")
    entries = [line.split(maxsplit=1) for line in lines if line.strip()]
    assert len(entries) >= 15
    for digest, name in entries:
        path = wfdb_fixtures / name.strip().lstrip("*")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name


def test_ptb_lower_case_leads_two_files_and_comments(wfdb_fixtures):
    rec = read(wfdb_fixtures, "ptbdb/s0010_re")
    assert rec.sig_name == ["i", "ii", "iii", "avr", "avl", "avf", *[f"v{i}" for i in range(1, 7)], "vx", "vy", "vz"]
    assert (rec.fs, rec.sig_len, rec.n_sig) == (1000, 38400, 15)
    assert set(rec.file_name) == {"s0010_re.dat", "s0010_re.xyz"} and rec.adc_gain == [2000.0] * 15
    assert "age: 81" in rec.comments and "sex: female" in rec.comments
    # lower-case names must be matched case-insensitively to the MIMIC names, never by position
    by_name = {n.lower(): i for i, n in enumerate(rec.sig_name)}
    assert [by_name[n.lower()] for n in LEADS] == [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]
    lead = {n: rec.p_signal[:, i] for n, i in by_name.items()}
    assert np.abs(lead["iii"] - (lead["ii"] - lead["i"])).max() < 0.01  # real cart: Einthoven holds


def test_motion_artefact_record_with_spaced_names(wfdb_fixtures):
    rec = read(wfdb_fixtures, "macecgdb/test01_00s")
    assert rec.sig_name == ["ECG 1", "ECG 2", "ECG 3", "ECG 4"]
    assert (rec.fs, rec.sig_len, rec.fmt[0], rec.adc_gain[0]) == (500, 4000, "16", 100.0)
    assert rec.comments[0].startswith("<age>: 25")


def test_mimic3_format_80_at_125_hz(wfdb_fixtures):
    rec = read(wfdb_fixtures, "mimic3wdb/3000003_0003")
    assert rec.fmt == ["80", "80"] and rec.sig_name == ["II", "V"]
    assert (rec.fs, rec.sig_len) == (125, 1028) and rec.adc_gain == [29.0, 24.0]
    assert rec.base_time == time(19, 46, 25, 757000) and rec.base_date is None
    assert not np.isnan(rec.p_signal).any()


def test_mitdb_format_212_with_baseline_and_beat_annotations(wfdb_fixtures):
    rec = read(wfdb_fixtures, "mitdb_excerpt/100_10s")
    assert rec.fmt == ["212", "212"] and rec.baseline == [1024, 1024] and rec.sig_name == ["MLII", "V5"]
    assert (rec.fs, rec.sig_len) == (360, 3600)
    dig = read(wfdb_fixtures, "mitdb_excerpt/100_10s", physical=False)
    np.testing.assert_allclose(rec.p_signal, (dig.d_signal - 1024) / 200.0)
    ann = wfdb.rdann(str(wfdb_fixtures / "mitdb_excerpt/100_10s"), "atr")
    beats = ann.sample[np.isin(ann.symbol, ["N", "A", "V"])]
    assert 10 <= beats.size <= 15  # ~75 bpm over 10 s
    # the annotated beats sit on the R peaks of MLII
    x = rec.p_signal[:, 0]
    for b in beats[(beats > 20) & (beats < 3580)]:
        window = x[b - 20 : b + 21]
        assert abs(int(np.argmax(window)) - 20) <= 10


def test_challenge_record_has_23_nan_samples(wfdb_fixtures):
    rec = read(wfdb_fixtures, "challenge2015/v102s")
    assert rec.sig_name == ["II", "V", "PLETH", "RESP"] and rec.units[2] == "NU"
    assert (rec.fs, rec.sig_len) == (250, 75000) and rec.fmt == ["212"] * 4
    assert int(np.isnan(rec.p_signal).sum()) == 23
    dig = read(wfdb_fixtures, "challenge2015/v102s", physical=False)
    assert int((dig.d_signal == -2048).sum()) == 23  # format 212's invalid value


def test_multi_segment_record_with_four_samples_per_frame(wfdb_fixtures):
    multi = read(wfdb_fixtures, "mimicdb_multiseg/041s/041s", m2s=False)
    assert multi.seg_name == ["041s01", "041s02"] and [int(n) for n in multi.seg_len] == [1000, 1000]
    rec = read(wfdb_fixtures, "mimicdb_multiseg/041s/041s")
    assert rec.sig_name == ["III", "I", "V", "ABP", "PAP", "PLETH", "RESP"]
    assert (rec.fs, rec.sig_len) == (125, 2000) and rec.samps_per_frame == [4, 4, 4, 1, 1, 1, 1]
    assert rec.base_date == date(1994, 10, 26) and rec.base_time == time(8, 26, 4)
    frames = read(wfdb_fixtures, "mimicdb_multiseg/041s/041s", smooth_frames=False)
    assert [x.shape[0] for x in frames.e_p_signal] == [8000] * 3 + [2000] * 4  # ECG at 500 Hz


def test_mimic_layout_record_reads_like_mimic_and_matches_its_ptb_source(wfdb_fixtures):
    rec = read(wfdb_fixtures, MIMIC)
    assert rec.sig_name == list(LEADS) and rec.fmt == ["16"] * 12 and rec.adc_gain == [200.0] * 12
    assert (rec.fs, rec.sig_len, rec.baseline) == (500, 5000, [0] * 12)
    assert rec.base_date == date(2182, 9, 22) and rec.base_time == time(12, 4)
    assert rec.comments == ["<subject_id>: 19999999"]
    dig = read(wfdb_fixtures, MIMIC, physical=False)
    assert dig.checksum == (dig.d_signal.astype(np.int64).sum(0) % 65536).tolist()
    assert dig.init_value == dig.d_signal[0].tolist()
    ptb = read(wfdb_fixtures, "ptbdb/s0010_re", sampto=10_000)
    src = {n: i for i, n in enumerate(ptb.sig_name)}
    for name in LEADS:
        ref = resample_poly(ptb.p_signal[:, src[name.lower()]], 1, 2)
        got = rec.p_signal[:, LEADS.index(name)]
        assert np.corrcoef(ref[100:-100], got[100:-100])[0, 1] > 0.99, name


@pytest.mark.parametrize("name", ["ptbdb/s0010_re", "macecgdb/test01_00s", "mimic3wdb/3000003_0003",
                                  "mitdb_excerpt/100_10s", "challenge2015/v102s", MIMIC])
def test_header_checksums_agree_with_the_samples(wfdb_fixtures, name):
    """WFDB checksum = 16-bit sum of the digital samples (invalid ones included); written signed by
    some tools (PTB: -8337) and unsigned by others (MIMIC-IV-ECG: 0..65535), equal modulo 65536."""
    dig = read(wfdb_fixtures, name, physical=False)
    sums = dig.d_signal.astype(np.int64).sum(0)
    assert [c % 65536 for c in dig.checksum] == (sums % 65536).tolist()
    assert dig.init_value == dig.d_signal[0].tolist()
    if name == MIMIC:
        assert all(0 <= c < 65536 for c in dig.checksum)
