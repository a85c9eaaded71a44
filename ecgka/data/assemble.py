"""Final outputs of a build from the work parts: split shards, the exclusion ledger, variants, manifest.

Parts are streamed in ``sample_id`` order into per-split writers, so memory stays bounded and the shards
are identical whatever executor produced the parts. Variants are views: a manifest and a ledger of the
train rows they drop, no shard copies. The manifest is written last.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ecgka.catalog import DatasetDir, WorkDir
from ecgka.data.config import BuildConfig
from ecgka.data.dataset_versions import Version
from ecgka.data.manifest import make_manifest, shard_metadata
from ecgka.data.shards import SplitWriter, add_subgroups, read_ipc, shard_schema
from ecgka.data.splits import NOT_SELECTED, variant_selection
from ecgka.errors import InputError
from ecgka.io import atomic_path, atomic_write_json, atomic_write_text
from ecgka.keys import SPLITS, Col
from ecgka.progress import progress_bar

NOT_IN_VARIANT = "not_selected_for_variant"
LEDGER_COLUMNS = ["row", "subject_id", "study_id", "path", "reason", "detail"]


class EmptyBuildError(InputError):
    """A build that pairs no ECG or leaves a split empty: no dataset, only the ledger to look at."""


def _main_cause(records: pd.DataFrame, exclusions: pd.DataFrame, lab_stats: dict[str, Any]) -> str:
    """The largest reason why no ECG was kept: no rows, no potassium lab, or the top exclusion."""
    if records.empty:
        return "the record list has no rows"
    if not lab_stats["rows"].get("kept", 0):
        drops = {k: v for k, v in lab_stats["dropped"].items() if v}
        if not drops:
            return "no potassium lab in the lab files"
        reason, n = max(drops.items(), key=lambda kv: kv[1])
        return f"{n:,} potassium labs dropped {reason}"
    reason, n = next(iter(exclusions["reason"].value_counts().items()))
    return f"{n:,} of {len(records):,} ECGs excluded as {reason}"


def _check_not_empty(ds: DatasetDir, records: pd.DataFrame, exclusions: pd.DataFrame, lab_stats: dict[str, Any],
                     meta: pd.DataFrame, split: np.ndarray) -> None:
    """Refuse an empty result before any shard is written; the ledger is kept for the user to read."""
    empty = [s for s in SPLITS if not np.any(split == s)]
    if not empty:
        return
    _write_ledger(exclusions, ds.exclusions_path)
    where = f"the exclusion ledger is {ds.exclusions_path}; no dataset was written"
    if meta.empty:
        raise EmptyBuildError(f"no ECG paired: {_main_cause(records, exclusions, lab_stats)} ({where})")
    raise EmptyBuildError(f"split {empty[0]} is empty: {len(meta):,} ECGs of {meta['subject_id'].nunique():,} "
                          f"subjects paired, too few for subject-disjoint splits (val/test take at most "
                          f"split.holdout_max_fraction of each label bin's subjects) ({where})")


PAIR_COLS = {Col.SAMPLE_ID.value: "int64", Col.SUBJECT_ID.value: "int64", Col.STUDY_ID.value: "int64",
             Col.LAB_TIME.value: "int64", Col.ITEMID.value: "int32", Col.POTASSIUM.value: "float32"}


def _read_parts(part_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = list(PAIR_COLS)
    kept = [read_ipc(WorkDir.rows(d), cols).to_pandas() for d in part_dirs]
    for frame in kept:  # whole seconds, as the lineage compares them
        frame[Col.LAB_TIME.value] = frame[Col.LAB_TIME.value].to_numpy().astype("datetime64[s]").astype(np.int64)
    excl = [read_ipc(WorkDir.excluded(d)).to_pandas() for d in part_dirs]
    empty_k = pd.DataFrame({c: pd.Series(dtype=t) for c, t in PAIR_COLS.items()})
    empty_e = pd.DataFrame({"sample_id": pd.Series(dtype="int64"), "reason": pd.Series(dtype=str),
                            "detail": pd.Series(dtype=str)})
    return (pd.concat(kept, ignore_index=True) if kept else empty_k,
            pd.concat(excl, ignore_index=True) if excl else empty_e)


def _write_splits(ds: DatasetDir, part_dirs: list[Path], split_of: pd.Series, cfg: BuildConfig, fingerprint: str,
                  progress: bool = False, subgroups: pd.DataFrame | None = None) -> dict[str, int]:

    schema = shard_schema(len(cfg.signal.leads) * cfg.signal.n_samples, shard_metadata(cfg, fingerprint))
    with contextlib.ExitStack() as stack:
        tmps = {s: stack.enter_context(atomic_path(ds.split_dir(s))) for s in SPLITS}
        writers = {s: SplitWriter(tmps[s], cfg.shards, schema) for s in SPLITS}
        for part in progress_bar(part_dirs, progress=progress, lines=True, desc="shards", unit=" part"):
            table = add_subgroups(read_ipc(WorkDir.rows(part)), subgroups)
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
    }, columns=LEDGER_COLUMNS)


def _write_ledger(df: pd.DataFrame, path: Path) -> None:
    """The exclusion ledger as CSV (outside the shard glob), written atomically."""
    atomic_write_text(path, df.to_csv(index=False, lineterminator="\n"))


def _variant(vdir: DatasetDir, name: str, ratio: float, parent: dict[str, Any], train: pd.DataFrame,
             meta: pd.DataFrame, split: np.ndarray, records: pd.DataFrame, cfg: BuildConfig) -> None:
    """One view: train capped to imbalance ratio ``ratio`` (its ledger lists the dropped rows), val/test kept."""
    keep = variant_selection(train[Col.POTASSIUM.value].to_numpy(), train[Col.SAMPLE_ID.value].to_numpy(), ratio,
                             cfg.label.grid, cfg.variants.seed)
    dropped = train[Col.SAMPLE_ID.value].to_numpy(np.int64)[~keep]
    ledger = _exclusion_table(records, dropped, np.full(len(dropped), NOT_IN_VARIANT, object),
                              np.full(len(dropped), f"imbalance ratio {ratio:g}", object))
    _write_ledger(ledger, vdir.exclusions_path)
    labels = {"train": train[Col.POTASSIUM.value].to_numpy()[keep]}
    labels |= {s: meta.loc[split == s, Col.POTASSIUM.value].to_numpy() for s in ("val", "test")}
    counts = {**parent["counts"], "train": int(keep.sum()), "excluded": parent["counts"]["excluded"] + len(dropped)}
    reasons = {**parent["exclusions"], NOT_IN_VARIANT: len(dropped)}
    extra = {"labs": parent["labs"], "variant": {"name": name, "imbalance_ratio": ratio, "parent": "../.."}}
    manifest = make_manifest(cfg, parent["fingerprint"], parent["inputs"], labels, counts, reasons,
                             parent["labs_dropped"], extra)
    atomic_write_json(vdir.manifest_path, manifest)


def _variants(ds: DatasetDir, parent: dict[str, Any], meta: pd.DataFrame, split: np.ndarray,
              records: pd.DataFrame, cfg: BuildConfig) -> list[str]:
    """``variants/ir<R>/``: views of the parent whose train is capped to imbalance ratio R."""
    if not cfg.variants.ratios:
        shutil.rmtree(ds.variants_dir, ignore_errors=True)
        return []
    train = meta[split == "train"]
    names = [f"ir{ratio:g}" for ratio in cfg.variants.ratios]
    with atomic_path(ds.variants_dir) as vroot:
        for name, ratio in zip(names, cfg.variants.ratios, strict=True):
            _variant(DatasetDir(vroot / name), name, ratio, parent, train, meta, split, records, cfg)
    return names


def _ledger(records: pd.DataFrame, no_lab_rows: np.ndarray, chunk_excl: pd.DataFrame, not_sel: np.ndarray
            ) -> pd.DataFrame:
    """Every record_list row in no split, with its reason, in row order."""
    invalid = records[records["reason"] != ""]
    rows = np.concatenate([invalid["row"].to_numpy(np.int64), no_lab_rows, chunk_excl["sample_id"].to_numpy(np.int64),
                           not_sel])
    reasons = np.concatenate([invalid["reason"].to_numpy(object), np.full(len(no_lab_rows), "no_lab_in_window", object),
                              chunk_excl["reason"].to_numpy(object), np.full(len(not_sel), NOT_SELECTED, object)])
    details = np.concatenate([invalid["detail"].to_numpy(object), np.full(len(no_lab_rows), "", object),
                              chunk_excl["detail"].to_numpy(object),
                              np.full(len(not_sel), "subject drawn for val/test with another sample", object)])
    return _exclusion_table(records, rows, reasons, details)


def assemble(ds: DatasetDir, records: pd.DataFrame, no_lab_rows: np.ndarray, part_dirs: list[Path],
             cfg: BuildConfig, fingerprint: str, inputs: dict[str, Any], lab_stats: dict[str, Any],
             version: Version, progress: bool = False, build_info: dict[str, Any] | None = None,
             subgroups: pd.DataFrame | None = None) -> dict[str, Any]:
    """Write splits, the ledger, variants, the potassium rows and the manifest; check the accounting.
    ``subgroups``: the subgroup columns by ``sample_id`` (``ecgka.data.subgroups``; None: all unknown)."""
    ds.manifest_path.unlink(missing_ok=True)  # the old output is no longer complete
    shutil.rmtree(ds.cache_dir, ignore_errors=True)  # signal caches of the old shards
    meta, chunk_excl = _read_parts(part_dirs)
    split = version.assign(meta, cfg)
    not_sel = meta.loc[split == NOT_SELECTED, "sample_id"].to_numpy(np.int64)
    exclusions = _ledger(records, no_lab_rows, chunk_excl, not_sel)
    _check_not_empty(ds, records, exclusions, lab_stats, meta, split)
    split_of = pd.Series(split, index=meta["sample_id"].to_numpy())
    counts = _write_splits(ds, part_dirs, split_of, cfg, fingerprint, progress,
                           None if subgroups is None else subgroups.set_index("sample_id"))
    total = sum(counts.values()) + len(exclusions)
    if total != len(records) or exclusions["row"].duplicated().any():
        raise RuntimeError(f"accounting error: {len(records)} records but {total} in splits + exclusions")
    _write_ledger(exclusions, ds.exclusions_path)
    full_counts = {"record_list": len(records), **counts, "excluded": len(exclusions)}
    reason_counts = {k: int(v) for k, v in exclusions["reason"].value_counts().items()}
    labels = {s: meta.loc[split == s, "potassium"].to_numpy() for s in SPLITS}
    extra = {"labs": lab_stats["rows"] | {"items": lab_stats["items"]},
             **version.manifest_block(cfg, meta[np.isin(split, SPLITS)].assign(split=split[np.isin(split, SPLITS)]))}
    manifest = make_manifest(cfg, fingerprint, inputs, labels, full_counts, reason_counts, lab_stats["dropped"], extra)
    manifest["variants"] = _variants(ds, manifest, meta, split, records, cfg)
    if build_info is not None:  # read / reused / not_read ECGs, chunks, executor: in the file, not only returned
        manifest["build"] = build_info
    if subgroups is not None:  # ECGs in the splits per subgroup level (docs/build.md, "Subgroups")
        kept = subgroups[subgroups["sample_id"].isin(meta.loc[np.isin(split, SPLITS), "sample_id"])]
        manifest["subgroups"] = {c: {str(k): int(v) for k, v in kept[c].value_counts().sort_index().items()}
                                 for c in ("sex", "care_setting", "egfr_stage")}
    with atomic_path(ds.labs_path) as tmp:
        version.labs.save(tmp)
    atomic_write_json(ds.manifest_path, manifest)
    return manifest
