"""Final outputs of a build from the work parts: split shards, exclusions, variants, manifest.

Parts are streamed in ``sample_id`` order into per-split writers, so memory stays bounded and the shards
are identical whatever executor produced the parts. The manifest is written last.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ecgka.data.config import BuildConfig
from ecgka.data.manifest import MANIFEST, make_manifest
from ecgka.data.shards import SplitWriter, shard_schema, split_parts
from ecgka.data.splits import NOT_SELECTED, assign_splits, variant_selection
from ecgka.io import atomic_path, atomic_write_json
from ecgka.keys import SPLITS, Col

EXCLUSIONS = "exclusions.parquet"
NOT_IN_VARIANT = "not_selected_for_variant"


def _read_parts(part_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = [Col.SAMPLE_ID.value, Col.SUBJECT_ID.value, Col.POTASSIUM.value]
    kept = [pq.read_table(d / "rows.parquet", columns=cols).to_pandas() for d in part_dirs]
    excl = [pq.read_table(d / "excluded.parquet").to_pandas() for d in part_dirs]
    empty_k = pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(cols, ("int64", "int64", "float32"), strict=True)})
    empty_e = pd.DataFrame({"sample_id": pd.Series(dtype="int64"), "reason": pd.Series(dtype=str),
                            "detail": pd.Series(dtype=str)})
    return (pd.concat(kept, ignore_index=True) if kept else empty_k,
            pd.concat(excl, ignore_index=True) if excl else empty_e)


def _write_splits(out_dir: Path, part_dirs: list[Path], split_of: pd.Series, cfg: BuildConfig,
                  progress: bool = False) -> dict[str, int]:
    from tqdm.auto import tqdm

    schema = shard_schema(len(cfg.signal.leads) * cfg.signal.n_samples)
    with contextlib.ExitStack() as stack:
        tmps = {s: stack.enter_context(atomic_path(out_dir / s)) for s in SPLITS}
        writers = {s: SplitWriter(tmps[s], cfg.shards, schema) for s in SPLITS}
        for part in tqdm(part_dirs, desc="shards", unit=" part", disable=not progress):
            table = pq.read_table(part / "rows.parquet")
            labels = split_of.loc[table.column(Col.SAMPLE_ID.value).to_numpy()].to_numpy()
            for s in SPLITS:
                writers[s].append(table.filter(pa.array(labels == s)))
        return {s: writers[s].close() for s in SPLITS}


def _exclusion_table(records: pd.DataFrame, rows: np.ndarray, reasons: np.ndarray, details: np.ndarray) -> pd.DataFrame:
    order = np.argsort(rows, kind="stable")
    rec = records.set_index("row").loc[rows[order]]
    return pd.DataFrame({
        "row": rows[order].astype(np.int64), "subject_id": rec["subject_id"].to_numpy(np.int64),
        "study_id": rec["study_id"].to_numpy(np.int64), "path": rec["path"].to_numpy().astype(str),
        "reason": reasons[order].astype(str), "detail": details[order].astype(str),
    })


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp, compression="zstd")


def _variants(out_dir: Path, parent: dict[str, Any], meta: pd.DataFrame, split: np.ndarray,
              exclusions: pd.DataFrame, records: pd.DataFrame, cfg: BuildConfig) -> list[str]:
    """``variants/ir<R>/``: train capped to imbalance ratio R, the parent's val/test, own manifest."""
    if not cfg.variants.ratios:
        shutil.rmtree(out_dir / "variants", ignore_errors=True)
        return []
    train = meta[split == "train"]
    names = []
    with atomic_path(out_dir / "variants") as vroot:
        for ratio in cfg.variants.ratios:
            name = f"ir{ratio:g}"
            keep = variant_selection(train["potassium"].to_numpy(), train["sample_id"].to_numpy(), ratio,
                                     cfg.split, cfg.variants.seed)
            kept_ids = np.sort(train["sample_id"].to_numpy()[keep])
            vdir = vroot / name
            schema = shard_schema(len(cfg.signal.leads) * cfg.signal.n_samples)
            writer = SplitWriter(vdir / "train", cfg.shards, schema)
            for part in split_parts(out_dir, "train"):
                table = pq.read_table(part)
                mask = np.isin(table.column(Col.SAMPLE_ID.value).to_numpy(), kept_ids, assume_unique=True)
                writer.append(table.filter(pa.array(mask)))
            n_train = writer.close()
            for s in ("val", "test"):
                shutil.copytree(out_dir / s, vdir / s)
            dropped = train["sample_id"].to_numpy()[~keep]
            extra = _exclusion_table(records, dropped, np.full(len(dropped), NOT_IN_VARIANT, object),
                                     np.full(len(dropped), f"imbalance ratio {ratio:g}", object))
            vexcl = pd.concat([exclusions, extra], ignore_index=True).sort_values("row", kind="stable")
            _write_parquet(vexcl, vdir / EXCLUSIONS)
            labels = {"train": train["potassium"].to_numpy()[keep]}
            labels |= {s: meta.loc[split == s, "potassium"].to_numpy() for s in ("val", "test")}
            counts = {**parent["counts"], "train": n_train, "excluded": len(vexcl)}
            reasons = vexcl["reason"].value_counts().to_dict()
            manifest = make_manifest(cfg, parent["fingerprint"], parent["inputs"], labels, counts,
                                     {k: int(v) for k, v in reasons.items()}, parent["labs_dropped"],
                                     {"labs": parent["labs"], "variant": {"name": name, "imbalance_ratio": ratio,
                                                                          "parent": ".."}})
            atomic_write_json(vdir / MANIFEST, manifest)
            names.append(name)
    return names


def assemble(out_dir: Path, records: pd.DataFrame, no_lab_rows: np.ndarray, part_dirs: list[Path],
             cfg: BuildConfig, fingerprint: str, inputs: dict[str, Any], lab_stats: dict[str, Any],
             progress: bool = False) -> dict[str, Any]:
    """Write splits, exclusions, variants and the manifest; check that the accounting is exact."""
    (out_dir / MANIFEST).unlink(missing_ok=True)  # the old output is no longer complete
    meta, chunk_excl = _read_parts(part_dirs)
    split = assign_splits(meta, cfg.split)
    split_of = pd.Series(split, index=meta["sample_id"].to_numpy())
    counts = _write_splits(out_dir, part_dirs, split_of, cfg, progress)
    invalid = records[records["reason"] != ""]
    not_sel = meta.loc[split == NOT_SELECTED, "sample_id"].to_numpy(np.int64)
    rows = np.concatenate([invalid["row"].to_numpy(np.int64), no_lab_rows, chunk_excl["sample_id"].to_numpy(np.int64),
                           not_sel])
    reasons = np.concatenate([invalid["reason"].to_numpy(object), np.full(len(no_lab_rows), "no_lab_in_window", object),
                              chunk_excl["reason"].to_numpy(object), np.full(len(not_sel), NOT_SELECTED, object)])
    details = np.concatenate([invalid["detail"].to_numpy(object), np.full(len(no_lab_rows), "", object),
                              chunk_excl["detail"].to_numpy(object),
                              np.full(len(not_sel), "subject drawn for val/test with another sample", object)])
    exclusions = _exclusion_table(records, rows, reasons, details)
    total = sum(counts.values()) + len(exclusions)
    if total != len(records) or exclusions["row"].duplicated().any():
        raise RuntimeError(f"accounting error: {len(records)} records but {total} in splits + exclusions")
    _write_parquet(exclusions, out_dir / EXCLUSIONS)
    full_counts = {"record_list": len(records), **counts, "excluded": len(exclusions)}
    reason_counts = {k: int(v) for k, v in exclusions["reason"].value_counts().items()}
    labels = {s: meta.loc[split == s, "potassium"].to_numpy() for s in SPLITS}
    extra = {"labs": lab_stats["rows"] | {"items": lab_stats["items"]}}
    manifest = make_manifest(cfg, fingerprint, inputs, labels, full_counts, reason_counts, lab_stats["dropped"], extra)
    manifest["variants"] = _variants(out_dir, manifest, meta, split, exclusions, records, cfg)
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest
