"""Signal QC and cleaning: lead mapping by name, batched cleaning = neurokit2 ecg_clean, resampling."""

from __future__ import annotations

import numpy as np
import pytest
from test_build_helpers import MIMIC_LEADS, ecg_digital

from ecgka.data.config import SignalConfig
from ecgka.data.mimic_reader import RecordError, Signal
from ecgka.data.signal_qc import clean_batch, lead_index, process_signal, to_stored


def _signal(digital, names=MIMIC_LEADS, fs=500.0):
    return Signal(digital.astype(np.float64) / 200.0, list(names), fs, ["mV"] * len(names), "test")


@pytest.mark.parametrize("powerline", [50.0, 60.0])
def test_batch_clean_equals_neurokit(powerline):
    import neurokit2 as nk

    x = np.stack([ecg_digital(s)[:, :3].T / 200.0 for s in range(3)])  # [3 records, 3 leads, 5000]
    cfg = SignalConfig(powerline_hz=powerline)
    ours = clean_batch(x, 500, cfg)
    for r in range(3):
        for lead in range(3):
            ref = nk.ecg_clean(x[r, lead], sampling_rate=500, method="neurokit", powerline=powerline)
            np.testing.assert_allclose(ours[r, lead], ref, rtol=0, atol=1e-12)
    assert np.array_equal(to_stored(ours)[0], ours[0].astype(np.float16).reshape(-1))


def test_clean_at_rates_below_twice_the_mains():
    """At 100 Hz a 60 Hz mains period is 1.67 samples: the moving average is the identity (neurokit2 raises)."""
    from scipy.signal import butter, sosfiltfilt

    x = np.stack([ecg_digital(s)[::5, 1] / 200.0 for s in range(2)])  # 10 s at 100 Hz
    ours = clean_batch(x, 100, SignalConfig(fs=100, n_samples=1000, powerline_hz=60.0))
    ref = sosfiltfilt(butter(5, 0.5, btype="highpass", output="sos", fs=100), x, axis=-1)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert not np.allclose(clean_batch(x, 100, SignalConfig(fs=100, n_samples=1000, powerline_hz=25.0)), ref)


def test_leads_by_name_not_position():
    d = ecg_digital(0)
    names = list(reversed(MIMIC_LEADS))
    x = process_signal(_signal(d, names), SignalConfig(leads=["aVF", "ii"]))
    np.testing.assert_array_equal(x[0], d[:, names.index("aVF")] / 200.0)
    np.testing.assert_array_equal(x[1], d[:, names.index("II")] / 200.0)
    assert lead_index(["ECG 1", "II"], ["ecg1"]) == [0]
    with pytest.raises(RecordError) as err:
        lead_index(["I", "III"], ["II"])
    assert err.value.reason == "lead_missing"


def test_resample_or_reject_other_rates():
    d = np.repeat(ecg_digital(1), 2, axis=0)  # 10 s at 1000 Hz
    with pytest.raises(RecordError) as err:
        process_signal(_signal(d, fs=1000.0), SignalConfig())
    assert err.value.reason == "wrong_fs"
    x = process_signal(_signal(d, fs=1000.0), SignalConfig(resample=True))
    assert x.shape == (1, 5000)
    ref = ecg_digital(1)[:, 1] / 200.0
    assert np.corrcoef(x[0], ref)[0, 1] > 0.99


def test_uv_units_are_converted():
    d = ecg_digital(2)
    sig = Signal(d.astype(np.float64) * 5.0, MIMIC_LEADS, 500.0, ["uV"] * 12, "test")  # 1 adu = 5 uV
    np.testing.assert_allclose(process_signal(sig, SignalConfig())[0], d[:, 1] / 200.0)
