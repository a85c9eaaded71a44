"""The fast MIMIC reader equals wfdb.rdrecord bit for bit on every record it accepts; errors have reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb
from test_build_helpers import ecg_digital, write_record

from ecgka.data.mimic_reader import RecordError, _parse_header, read_record, read_wfdb


def assert_same_as_wfdb(record: Path) -> str:
    """Read with read_record and wfdb; assert identical samples (NaN positions included) and metadata."""
    ours = read_record(record)
    ref = wfdb.rdrecord(str(record))
    assert ours.p_signal.dtype == ref.p_signal.dtype
    np.testing.assert_array_equal(ours.p_signal, ref.p_signal)  # NaN == NaN here, exact otherwise
    assert ours.p_signal.tobytes() == ref.p_signal.tobytes()
    assert ours.sig_name == ref.sig_name and ours.fs == ref.fs and ours.units == ref.units
    return ours.reader


def _fixture_records(root: Path) -> list[Path]:
    return sorted(p.with_suffix("") for p in root.rglob("*.hea"))


def test_real_fixtures(wfdb_fixtures):
    readers = {}
    for record in _fixture_records(wfdb_fixtures):
        header = _parse_header(Path(f"{record}.hea").read_text())
        try:
            wfdb.rdrecord(str(record))
        except Exception:
            continue  # e.g. a segment without its layout: not a record wfdb reads alone
        if header is None:
            readers[record.name] = "wfdb"
            continue
        readers[record.name] = assert_same_as_wfdb(record)
    assert readers["49999999"] == "fast"  # the MIMIC-layout record goes through the fast path
    assert readers["100_10s"] == "wfdb" and readers["3000003_0003"] == "wfdb"  # fmt 212 / 80: wfdb


def test_hand_made_with_invalid_samples_and_baselines(tmp_path):
    d = ecg_digital(1)
    d[100:110, 1] = -32768  # invalid samples -> NaN
    d[0, 5] = -32768
    rec = write_record(tmp_path, "a/1", d)
    assert assert_same_as_wfdb(rec) == "fast"
    assert np.isnan(read_record(rec).p_signal[:, 1]).sum() == 10
    rec2 = write_record(tmp_path, "b/2", ecg_digital(2, n_sig=3), names=["I", "II", "V1"], gain="1000.5(-12)/uV")
    assert assert_same_as_wfdb(rec2) == "fast"


@pytest.mark.parametrize("gain", ["200/mV", "200.0(0)", "0(0)/mV"])
def test_unusual_headers_fall_back_to_wfdb(tmp_path, gain):
    rec = write_record(tmp_path, "c/3", ecg_digital(3, n_sig=2), names=["I", "II"], gain=gain)
    assert assert_same_as_wfdb(rec) == "wfdb"


def test_missing_and_truncated(tmp_path):
    with pytest.raises(RecordError) as err:
        read_record(tmp_path / "nope")
    assert err.value.reason == "file_missing"
    rec = write_record(tmp_path, "d/4", ecg_digital(4))
    Path(f"{rec}.dat").unlink()
    with pytest.raises(RecordError) as err:
        read_record(rec)
    assert err.value.reason == "file_missing"
    rec = write_record(tmp_path, "e/5", ecg_digital(5))
    data = Path(f"{rec}.dat").read_bytes()
    Path(f"{rec}.dat").write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordError) as err:
        read_record(rec)
    assert err.value.reason == "truncated"


def test_corrupt_header(tmp_path):
    rec = write_record(tmp_path, "f/6", ecg_digital(6))
    Path(f"{rec}.hea").write_bytes(b"6 twelve 500 5000\n\xff\xfe garbage\n")
    with pytest.raises(RecordError) as err:
        read_record(rec)
    assert err.value.reason == "header_corrupt"
    Path(f"{rec}.hea").write_text("6 12 500 5000\n6.dat 16 200.0(0)/mV 16 0 0 0 0 I\n")  # 1 of 12 lines
    with pytest.raises(RecordError) as err:
        read_wfdb(rec)
    assert err.value.reason in {"header_corrupt", "read_error"}


def _check(sig, leads=("II",)):
    from ecgka.data.signal_qc import check_checksums, lead_index

    check_checksums(sig, lead_index(sig.sig_name, list(leads)))


def test_real_fixture_checksums_pass_and_equal_wfdb(wfdb_fixtures):
    """Every real record's samples sum to its header checksums, by both readers; the sums equal wfdb's own."""
    checked = 0
    for record in _fixture_records(wfdb_fixtures):
        try:
            ref = wfdb.rdrecord(str(record), physical=False)
        except Exception:
            continue
        for fast in (True, False):
            sig = read_record(record, fast=fast, root=wfdb_fixtures)
            if sig.checksums is None:  # multi-segment / multi-frequency: not checked
                continue
            header, data = sig.checksums
            assert (header >= 0).all(), record
            np.testing.assert_array_equal(header, data)
            np.testing.assert_array_equal(data, ref.calc_checksum())
            checked += 1
    assert checked >= 12


@pytest.mark.parametrize("fast", [True, False])
def test_checksum_signed_or_unsigned_and_mismatch(tmp_path, fast):
    d = ecg_digital(7)
    rec = write_record(tmp_path, "g/7", d)
    hea = Path(f"{rec}.hea")
    sig = read_record(rec, fast=fast)
    assert sig.reader == ("fast" if fast else "wfdb")
    _check(sig, ["I", "II", "V6"])
    # the same checksum written as a signed 16-bit value passes too
    lines = hea.read_text().splitlines()
    fields = lines[2].split()
    fields[6] = str(int(fields[6]) - 65536 if int(fields[6]) >= 32768 else int(fields[6]))
    hea.write_text("\n".join([*lines[:2], " ".join(fields), *lines[3:]]) + "\n")
    _check(read_record(rec, fast=fast))
    fields[6] = str(int(fields[6]) + 1)  # off by one: lead II's data is not what the header describes
    hea.write_text("\n".join([*lines[:2], " ".join(fields), *lines[3:]]) + "\n")
    with pytest.raises(RecordError) as err:
        _check(read_record(rec, fast=fast))
    assert err.value.reason == "checksum_mismatch" and "lead II" in err.value.detail
    _check(read_record(rec, fast=fast), ["I", "V6"])  # only the leads read are checked


def test_header_without_checksums_is_not_checked(tmp_path):
    rec = write_record(tmp_path, "h/8", ecg_digital(8, n_sig=2), names=["I", "II"])
    hea = Path(f"{rec}.hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join([lines[0], *[" ".join(ln.split()[:5]) for ln in lines[1:3]]]) + "\n")
    sig = read_record(rec)
    assert sig.reader == "wfdb"  # the fast reader needs every field
    header, _ = sig.checksums
    assert (header == -1).all()


def test_format_212_header_on_format_16_data_is_a_checksum_mismatch(tmp_path):
    rec = write_record(tmp_path, "i/9", ecg_digital(9))
    hea = Path(f"{rec}.hea")
    hea.write_text(hea.read_text().replace(" 16 200.0(0)/mV", " 212 200.0(0)/mV"))
    sig = read_record(rec)
    assert sig.reader == "wfdb"
    with pytest.raises(RecordError) as err:
        _check(sig)
    assert err.value.reason == "checksum_mismatch"


@pytest.mark.parametrize("names", [["I", "II", "II"], ["I", "II", "ii"], ["I", "V1", "V 1"]])
def test_duplicate_lead_names(tmp_path, names):
    from ecgka.data.config import SignalConfig
    from ecgka.data.signal_qc import process_signal

    rec = write_record(tmp_path, "j/10", ecg_digital(10, n_sig=3), names=names)
    cfg = SignalConfig.model_validate({"leads": ["I"], "expected_n_leads": 3})
    with pytest.raises(RecordError) as err:
        process_signal(read_record(rec), cfg)  # even a lead that is not duplicated: the header is wrong
    assert err.value.reason == "duplicate_lead"
