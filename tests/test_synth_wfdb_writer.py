"""ecgka's WFDB writer against the reference implementation (``wfdb.wrsamp``) on the same samples."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgka.standin.wfdb_writer import LEADS, N_SAMPLES, record_path, to_digital, write_record


def _digital(seed: int, scale: int, extremes: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.integers(-scale, scale + 1, (N_SAMPLES, len(LEADS)))
    if extremes:  # the full range, the invalid value and constant leads
        d[rng.integers(0, N_SAMPLES, 50), rng.integers(0, len(LEADS), 50)] = 32767
        d[rng.integers(0, N_SAMPLES, 50), rng.integers(0, len(LEADS), 50)] = -32768
        d[:, 3] = rng.integers(-5, 5)
    return d.astype(np.int16)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1, 300, 32767]), extremes=st.booleans())
def test_same_bytes_and_signal_lines_as_wfdb_wrsamp(tmp_path_factory, seed, scale, extremes):
    tmp = tmp_path_factory.mktemp("w")
    d = _digital(seed, scale, extremes)
    stem = write_record(tmp, 12345678, 45678901, datetime(2150, 1, 2, 3, 4, 5), d)
    wfdb.wrsamp("ref", fs=500, units=["mV"] * 12, sig_name=list(LEADS), d_signal=d.astype(np.int64),
                fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(tmp))
    assert stem.with_suffix(".dat").read_bytes() == (tmp / "ref.dat").read_bytes()
    ours = stem.with_suffix(".hea").read_text().splitlines()
    ref = (tmp / "ref.hea").read_text().splitlines()
    assert [line.replace("45678901.dat", "ref.dat") for line in ours[1:13]] == ref[1:13]
    assert ours[0] == "45678901 12 500 5000 03:04:05 02/01/2150"  # wrsamp writes no base time/date
    back = wfdb.rdrecord(str(stem), physical=False)
    np.testing.assert_array_equal(back.d_signal, d)


def test_record_path_and_digitisation():
    assert record_path(10000032, 40689238) == "files/p1000/p10000032/s40689238/40689238"
    mv = np.array([[0.0, 0.0049, -0.0051, 1.0, 200.0, -200.0] * 2] * N_SAMPLES)
    d = to_digital(mv)
    assert d[0].tolist() == [0, 1, -1, 200, 32767, -32767] * 2  # never the invalid value by accident
