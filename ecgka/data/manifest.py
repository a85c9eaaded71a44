"""``manifest.json`` of a dataset directory: what the data is, how it was made, and its counts.

The manifest is written last: its presence with a matching ``fingerprint`` marks a complete build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecgka import __version__
from ecgka.config import config_hash
from ecgka.data.config import BuildConfig
from ecgka.data.splits import histogram, shot_groups
from ecgka.io import read_json
from ecgka.keys import SPLITS

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def data_config(cfg: BuildConfig) -> dict[str, Any]:
    """The config that defines the data (without switches such as ``keep_work``)."""
    return cfg.model_dump(mode="json", exclude={"keep_work"})


def dataset_fingerprint(cfg: BuildConfig, inputs: dict[str, Any]) -> str:
    """Short hash of the data-defining config, the input content hashes and the schema version."""
    hashes = {k: (v["sha256"] if isinstance(v, dict) else [x["sha256"] for x in v] if isinstance(v, list) else v)
              for k, v in inputs.items() if k != "ecg_root"}
    return config_hash({"schema": SCHEMA_VERSION, "config": data_config(cfg), "inputs": hashes})


def label_block(cfg: BuildConfig) -> dict[str, Any]:
    s = cfg.split
    return {"name": "potassium", "unit": "mmol/L", "lo": s.lo, "hi": s.hi, "bin_width": s.bin_width}


def make_manifest(cfg: BuildConfig, fingerprint: str, inputs: dict[str, Any], labels: dict[str, np.ndarray],
                  counts: dict[str, int], exclusions: dict[str, int], labs_dropped: dict[str, int],
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the manifest from per-split label arrays and the counts."""
    s = cfg.split
    hists = {split: {"lo": s.lo, "bin_width": s.bin_width, "counts": histogram(labels[split], s.lo, s.hi, s.bin_width)}
             for split in SPLITS}
    train_counts = hists["train"]["counts"]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "ecgka_version": __version__,
        "fingerprint": fingerprint,
        "config": data_config(cfg),
        "inputs": inputs,
        "signal": {"leads": list(cfg.signal.leads), "fs": cfg.signal.fs, "n_samples": cfg.signal.n_samples},
        "label": label_block(cfg),
        "counts": counts,
        "exclusions": dict(sorted(exclusions.items())),
        "labs_dropped": labs_dropped,
        "label_histograms": hists,
        "train_bin_counts": {"lo": s.lo, "bin_width": s.bin_width, "counts": train_counts},
        "n_max": int(max(train_counts)) if train_counts else 0,
        "shot_groups": shot_groups(train_counts, s.many_shot, s.few_shot),
    }
    manifest.update(extra or {})
    return manifest


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    path = Path(data_dir) / MANIFEST
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return None


def is_complete(data_dir: Path, fingerprint: str) -> bool:
    """A finished build of the same data: matching manifest and every split folder present."""
    manifest = read_manifest(data_dir)
    if manifest is None or manifest.get("fingerprint") != fingerprint:
        return False
    names = list(SPLITS) + [f"variants/{v}" for v in manifest.get("variants", [])]
    return (Path(data_dir) / "exclusions.parquet").is_file() and all((Path(data_dir) / n).is_dir() for n in names)


def format_summary(manifest: dict[str, Any], seconds: float | None = None) -> str:
    """A plain-text summary table (splits, exclusion reasons, lab drops)."""
    c = manifest["counts"]
    rows = [("record_list", c["record_list"])] + [(s, c[s]) for s in SPLITS] + [("excluded", c["excluded"])]
    rows += [(f"  {k}", v) for k, v in manifest["exclusions"].items() if v]
    rows += [("labs kept", manifest.get("labs", {}).get("kept", 0))]
    rows += [(f"  dropped {k}", v) for k, v in manifest["labs_dropped"].items() if v]
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value:>10,}" for name, value in rows]
    lines.append(f"{'n_max':<{width}}  {manifest['n_max']:>10,}")
    groups = manifest["shot_groups"]
    lines.append(f"{'shot bins':<{width}}  many {len(groups['many'])}, median {len(groups['median'])}, few {len(groups['few'])}")
    if manifest.get("variants"):
        lines.append(f"{'variants':<{width}}  {', '.join(manifest['variants'])} (in variants/)")
    if seconds is not None:
        lines.append(f"{'seconds':<{width}}  {seconds:>10.1f}")
    return "\n".join(lines)
