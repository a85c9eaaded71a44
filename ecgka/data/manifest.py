"""``manifest.json`` of a dataset directory and the metadata of its shards: what the data is, how it was
made, and its counts.

The manifest is written last: its presence with a matching ``fingerprint`` marks a complete build. Each
shard carries the same facts (schema version, fingerprint, signal and label blocks) as Parquet key-value
metadata under the key ``ecgka``, so a shard copied out of its folder still says what it holds.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ecgka import __version__
from ecgka.catalog import DATASET_SCHEMA_VERSION
from ecgka.catalog.info import LabelHistogram
from ecgka.config import config_hash
from ecgka.data.config import BuildConfig
from ecgka.data.signal_qc import HIGHPASS_HZ
from ecgka.keys import SPLITS

SHARD_METADATA_KEY = "ecgka"


def data_config(cfg: BuildConfig) -> dict[str, Any]:
    """The config that defines the data (without switches such as ``keep_work``)."""
    return cfg.model_dump(mode="json", exclude={"keep_work"})


def dataset_fingerprint(cfg: BuildConfig, inputs: dict[str, Any]) -> str:
    """Short hash of the data-defining config, the input content hashes and the schema version."""
    hashes = {k: (v.get("sha256", v.get("digest")) if isinstance(v, dict) else [x["sha256"] for x in v] if isinstance(v, list) else v)
              for k, v in inputs.items() if k != "ecg_root"}
    return config_hash({"schema": DATASET_SCHEMA_VERSION, "config": data_config(cfg), "inputs": hashes})


def signal_block(cfg: BuildConfig) -> dict[str, Any]:
    """How the ``signal`` column is stored: leads, rate, length, unit, layout, dtype and cleaning."""
    s = cfg.signal
    cleaning = {"clean": s.clean, "method": s.clean_method if s.clean else None,
                "powerline_hz": s.powerline_hz if s.clean else None, "highpass_hz": HIGHPASS_HZ if s.clean else None}
    return {"leads": list(s.leads), "fs": s.fs, "n_samples": s.n_samples, "unit": "mV", "layout": "lead-major",
            "dtype": "float16", "cleaning": cleaning}


def shard_metadata(cfg: BuildConfig, fingerprint: str) -> dict[str, str]:
    """The key-value metadata of every shard (deterministic: shards stay byte-identical across executors)."""
    facts = {"schema_version": DATASET_SCHEMA_VERSION, "fingerprint": fingerprint, "signal": signal_block(cfg),
             "label": cfg.label.grid.to_dict()}
    return {SHARD_METADATA_KEY: json.dumps(facts, sort_keys=True)}


def read_shard_metadata(schema_metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    """The ``ecgka`` facts of a shard from ``pyarrow.parquet.read_schema(path).metadata`` ({} if absent)."""
    raw = (schema_metadata or {}).get(SHARD_METADATA_KEY.encode())
    return json.loads(raw) if raw else {}


def _histograms(cfg: BuildConfig, labels: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    grid = cfg.label.grid
    return {split: LabelHistogram.of(grid, labels[split]).to_dict() for split in SPLITS}


def make_manifest(cfg: BuildConfig, fingerprint: str, inputs: dict[str, Any], labels: dict[str, np.ndarray],
                  counts: dict[str, int], exclusions: dict[str, int], labs_dropped: dict[str, int],
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the manifest from per-split label arrays and the counts."""
    grid = cfg.label.grid
    hists = _histograms(cfg, labels)
    train_counts = hists["train"]["counts"]
    manifest = {
        "schema_version": DATASET_SCHEMA_VERSION,
        "ecgka_version": __version__,
        "fingerprint": fingerprint,
        "parent": None,
        "config": data_config(cfg),
        "inputs": inputs,
        "signal": signal_block(cfg),
        "label": grid.to_dict(),
        "counts": counts,
        "exclusions": dict(sorted(exclusions.items())),
        "labs_dropped": labs_dropped,
        "label_histograms": hists,
        "train_bin_counts": hists["train"],
        "n_max": int(max(train_counts)) if train_counts else 0,
        "shot_groups": grid.shot_groups(train_counts),
        "variants": [],
    }
    manifest.update(extra or {})
    return manifest


def format_summary(manifest: dict[str, Any], seconds: float | None = None) -> str:
    """A plain-text summary table (splits, exclusion reasons, lab drops)."""
    c = manifest["counts"]
    rows = [("record_list", c["record_list"])] + [(s, c[s]) for s in SPLITS] + [("excluded", c["excluded"])]
    rows += [(f"  {k}", v) for k, v in manifest["exclusions"].items() if v]
    rows += [("labs kept", manifest.get("labs", {}).get("kept", 0))]
    rows += [(f"  dropped {k}", v) for k, v in manifest["labs_dropped"].items() if v]
    rows += [(f"  {k} (labs)", v) for k, v in manifest.get("lab_changes", {}).items() if k.startswith("withdrawn_")
             and k != "withdrawn_rows" and v]
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value:>10,}" for name, value in rows]
    lines.append(f"{'n_max':<{width}}  {manifest['n_max']:>10,}")
    groups = manifest["shot_groups"]
    lines.append(f"{'shot bins':<{width}}  many {len(groups['many'])}, median {len(groups['median'])}, few {len(groups['few'])}")
    if manifest.get("labs", {}).get("hemolysis_unchecked"):
        lines.append(hemolysis_warning(manifest["labs"]))
    if manifest.get("variants"):
        lines.append(f"{'variants':<{width}}  {', '.join(manifest['variants'])} (imbalance variants)")
    if seconds is not None:
        lines.append(f"{'seconds':<{width}}  {seconds:>10.1f}")
    return "\n".join(lines)


def hemolysis_warning(labs: dict[str, Any]) -> str:
    """The summary line for lab files without ``comments``: the haemolysis rule could not be applied."""
    files = ", ".join(labs.get("hemolysis_unchecked_files", [])) or "a lab file"
    return (f"WARNING: haemolysis rule not applied to {labs['hemolysis_unchecked']:,} potassium rows "
            f"(no comments column in {files})")
