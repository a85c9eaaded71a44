"""Hand-made MIMIC-IV-ECG roots and lab tables for the build tests (no tests here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
LAB_COLUMNS = ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id", "charttime",
               "storetime", "value", "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag",
               "priority", "comments"]


def ecg_digital(seed: int, n: int = 5000, n_sig: int = 12) -> np.ndarray:
    """A plausible ECG in adu (200/mV): beats every 0.8 s plus noise, int16 [n, n_sig]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 500.0
    beat = np.exp(-(((t % 0.8) - 0.3) ** 2) / (2 * 0.01**2)) + 0.3 * np.exp(-(((t % 0.8) - 0.55) ** 2) / (2 * 0.04**2))
    sig = np.stack([beat * (1 + 0.1 * k) * 200 for k in range(n_sig)], axis=1) + rng.normal(0, 4, (n, n_sig))
    return np.round(sig).astype(np.int16)


def record_path(subject: int, study: int) -> str:
    return f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"


def write_record(root: Path, rel: str, digital: np.ndarray, names: list[str] | None = None, fs: int = 500,
                 gain: str = "200.0(0)/mV", fmt: str = "16") -> Path:
    """Write a record in the exact MIMIC-IV-ECG header layout (little-endian int16 interleaved)."""
    names = names or MIMIC_LEADS[: digital.shape[1]]
    base = Path(root) / rel
    base.parent.mkdir(parents=True, exist_ok=True)
    name = base.name
    digital.astype("<i2").tofile(f"{base}.dat")
    lines = [f"{name} {digital.shape[1]} {fs} {digital.shape[0]} 12:04:00 22/09/2182"]
    for k, lead in enumerate(names):
        checksum = int(digital[:, k].astype(np.int64).sum() % 65536)  # the WFDB checksum, as real headers have
        lines.append(f"{name}.dat {fmt} {gain} 16 0 {int(digital[0, k])} {checksum} 0 {lead}")
    lines.append("# <subject_id>: 1")
    Path(f"{base}.hea").write_text("\n".join(lines) + "\n")
    return base


def write_root(root: Path, rows: list[dict]) -> Path:
    """record_list.csv from dicts with subject_id, study_id, ecg_time (and optional path)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([{"subject_id": r["subject_id"], "study_id": r["study_id"], "file_name": r["study_id"],
                        "ecg_time": r["ecg_time"], "path": r.get("path", record_path(r["subject_id"], r["study_id"]))}
                       for r in rows])
    df.to_csv(root / "record_list.csv", index=False)
    return root


def lab_frame(rows: list[dict]) -> pd.DataFrame:
    """labevents-format rows from dicts with subject_id, itemid, charttime, valuenum (+ comments)."""
    out = []
    for i, r in enumerate(rows):
        row = dict.fromkeys(LAB_COLUMNS, "")
        row.update(labevent_id=i + 1, storetime=r["charttime"], value=r.get("value", r["valuenum"]),
                   valueuom="mEq/L", priority="ROUTINE")
        row.update(r)
        out.append(row)
    return pd.DataFrame(out, columns=LAB_COLUMNS)


def write_labs(path: Path, rows: list[dict]) -> Path:
    df = lab_frame(rows)
    path = Path(path)
    if path.suffix == ".parquet":
        df.astype(str).to_parquet(path)
    else:
        df.to_csv(path, index=False)
    return path


def small_dataset(tmp: Path, n_subjects: int = 12, per_subject: int = 2, seed: int = 0) -> tuple[Path, Path]:
    """A root with valid records and a lab file pairing each ECG with a potassium 10 min later."""
    rng = np.random.default_rng(seed)
    rows, labs = [], []
    for s in range(n_subjects):
        subject = 10000000 + s
        for k in range(per_subject):
            study = 40000000 + s * 100 + k
            t = pd.Timestamp("2150-01-01 08:00:00") + pd.Timedelta(days=k + s)
            rows.append({"subject_id": subject, "study_id": study, "ecg_time": str(t)})
            write_record(tmp / "ecg", record_path(subject, study), ecg_digital(seed * 1000 + s * 10 + k))
            k_val = round(float(rng.uniform(2.5, 6.5)), 1)
            labs.append({"subject_id": subject, "itemid": 50971, "charttime": str(t + pd.Timedelta(minutes=10)),
                         "valuenum": k_val})
    write_root(tmp / "ecg", rows)
    return tmp / "ecg", write_labs(tmp / "labevents.csv", labs)
