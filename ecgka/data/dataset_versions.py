"""Dataset versions: a build on top of a previous version (``ecgka build --previous DIR``).

A version keeps its potassium rows (``DatasetDir.labs_path``), so the next one starts from them plus the
new exports (:func:`merge_labs`: a lab is identified by subject, charttime and item; a later export's rows
of a lab replace the earlier ones, a repeated row counts once, another value counts as changed). ECGs of
the previous version are reused, not read again (:func:`reuse_plan`), and subjects keep their split
(:func:`ecgka.data.splits.assign_splits_stable`). :class:`Version` carries what the manifest records:
exports, parent, split salt, the content digest and the per-split changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ecgka.catalog import DatasetDir
from ecgka.config import config_hash
from ecgka.data.config import BuildConfig
from ecgka.data.labs import LAB_KEY, LabTable, merge_labs  # noqa: F401 (merge_labs: the merge rule, re-exported)
from ecgka.data.manifest import data_config
from ecgka.data.splits import NOT_SELECTED, assign_splits, assign_splits_stable
from ecgka.errors import InputError
from ecgka.io import utc_now
from ecgka.keys import SPLITS, Col

# ledger reasons that do not come from reading the record: never reused (recomputed by the new build)
NOT_SIGNAL_REASONS = frozenset({"bad_row", "bad_ecg_time", "duplicate_record", "no_lab_in_window", NOT_SELECTED,
                                "not_selected_for_variant"})
NOT_READ = "subject held out in the previous version: its chosen ECG stays, this one is not read"
PAIR_COLUMNS = [Col.SAMPLE_ID.value, Col.SUBJECT_ID.value, Col.STUDY_ID.value, Col.LAB_TIME.value,
                Col.ITEMID.value, Col.POTASSIUM.value]
REUSE_COLUMNS = ["prev_sample_id", "prev_reason", "prev_detail"]


def export_entry(fp: dict[str, Any]) -> dict[str, Any]:
    """A lab export as the manifest records it: file name, size, sha256."""
    return {"name": Path(fp["path"]).name, "size": fp["size"], "sha256": fp["sha256"]}


def read_pairs(ds: DatasetDir) -> pd.DataFrame:
    """The pairs of a dataset's shards (no signals): ``PAIR_COLUMNS`` + ``split``, lab time in seconds."""
    frames = []
    for split in SPLITS:
        for path in ds.shards(split):
            frame = pq.read_table(path, columns=PAIR_COLUMNS).to_pandas()
            frames.append(frame.assign(split=split))
    pairs = pd.concat(frames, ignore_index=True)
    pairs[Col.LAB_TIME.value] = pairs[Col.LAB_TIME.value].to_numpy().astype("datetime64[s]").astype(np.int64)
    return pairs


@dataclass
class Previous:
    """The previous version: its folder, manifest, potassium rows, pairs and ledger."""

    ds: DatasetDir
    manifest: dict[str, Any]
    labs: LabTable
    pairs: pd.DataFrame
    ledger: pd.DataFrame

    @property
    def digest(self) -> str:
        return self.manifest["digest"]

    @property
    def exports(self) -> list[dict[str, Any]]:
        return self.manifest["exports"]

    def same_signal(self, cfg: BuildConfig) -> bool:
        return self.manifest["config"].get("signal") == data_config(cfg)["signal"]


def load_previous(path: str | Path, out_dir: Path) -> Previous:
    """Read the previous version; one-line errors for a non-dataset, a variant, ``--out`` = it, or no labs."""
    ds = DatasetDir(path)
    manifest = ds.read_manifest()
    if manifest.get("variant"):
        raise InputError(f"{path}: an imbalance variant, not a dataset version; give its parent folder")
    if Path(path).resolve() == Path(out_dir).resolve():
        raise InputError(f"--out {out_dir} is the --previous version; a new version goes to a new folder")
    if not ds.labs_path.is_file():
        raise InputError(f"{path}: no {ds.labs_path.name} (built by an ecgka without dataset versions); "
                         "rebuild it with `ecgka build` first")
    labs = LabTable.load(ds.labs_path)
    ledger = pd.read_csv(ds.exclusions_path, dtype={"path": str, "reason": str, "detail": str}, keep_default_na=False)
    return Previous(ds, manifest, labs, read_pairs(ds), ledger)


def _explicit(model: Any, prefix: str = "") -> list[str]:
    """Dotted keys set explicitly on a config (a config file's keys, ``key=value`` overrides, constructor
    arguments), not left at their defaults."""
    from pydantic import BaseModel

    keys = []
    for name in sorted(model.model_fields_set):
        value = getattr(model, name)
        if isinstance(value, BaseModel) and value.model_fields_set:
            keys += _explicit(value, f"{prefix}{name}.")
        elif not isinstance(value, BaseModel):
            keys.append(f"{prefix}{name}")
    return keys


def _walk(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def inherit_config(prev: Previous, cfg: BuildConfig | None) -> tuple[BuildConfig, dict[str, dict[str, Any]]]:
    """The child's config: the parent's resolved config (its manifest), with the keys given explicitly in ``cfg``
    as overrides. Returns it and ``config_changes`` ({dotted key: {parent, child}} for overrides that differ).
    Another label grid or kind of label than the parent's is a one-line error."""
    import copy

    parent = prev.manifest.get("config") or {}
    child = copy.deepcopy(parent)
    given = cfg.model_dump(mode="json") if cfg is not None else {}
    keys = _explicit(cfg) if cfg is not None else []
    for key in keys:
        if key == "keep_work":
            continue
        *path, last = key.split(".")
        node = child
        for part in path:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(_walk(given, key))
    if cfg is not None:
        child["keep_work"] = cfg.keep_work
    try:
        out = BuildConfig.model_validate(child)
    except ValueError as exc:
        first = str(exc).splitlines()
        raise InputError(f"--previous {prev.ds.path}: its config cannot be reused ({first[1] if len(first) > 1 else first[0]})"
                         ) from None
    mine, theirs = out.label.grid.to_dict(), prev.manifest.get("label") or {}
    if theirs and mine != theirs:
        what = (f"label {mine.get('name')} on a {theirs.get('name')} parent" if mine.get("name") != theirs.get("name")
                else f"label grid {mine.get('lo')}-{mine.get('hi')} step {mine.get('step')} differs from the parent's "
                     f"{theirs.get('lo')}-{theirs.get('hi')} step {theirs.get('step')}")
        raise InputError(f"--previous {prev.ds.path}: {what}; a version keeps its parent's label (build a new dataset "
                         "without --previous)")
    resolved = data_config(out)
    changes = {k: {"parent": _walk(parent, k), "child": _walk(resolved, k)} for k in keys
               if k != "keep_work" and _walk(parent, k) != _walk(resolved, k)}
    return out, changes


def reuse_plan(records: pd.DataFrame, prev: Previous, same_signal: bool) -> pd.DataFrame:
    """Per record to process (``row, subject_id, study_id, path``): ``prev_sample_id`` (>= 0: its signal is taken
    from the previous shards), or ``prev_reason``/``prev_detail`` (an exclusion kept: a signal reason of the
    previous version, or ``not_selected_for_split`` for a held-out subject's other ECGs, never read)."""
    out = pd.DataFrame({"prev_sample_id": np.full(len(records), -1, np.int64),
                        "prev_reason": np.full(len(records), "", object),
                        "prev_detail": np.full(len(records), "", object)}, index=records.index)
    study = records["study_id"]
    held = prev.pairs[prev.pairs["split"] != "train"]
    other = records["subject_id"].isin(held[Col.SUBJECT_ID.value]) & ~study.isin(held[Col.STUDY_ID.value])
    out.loc[other, "prev_reason"], out.loc[other, "prev_detail"] = NOT_SELECTED, NOT_READ
    if not same_signal:
        return out
    by_study = pd.Series(prev.pairs[Col.SAMPLE_ID.value].to_numpy(), index=prev.pairs[Col.STUDY_ID.value].to_numpy())
    hit = study.isin(by_study.index) & ~other
    out.loc[hit, "prev_sample_id"] = by_study.loc[study[hit]].to_numpy()
    signal_excl = prev.ledger[~prev.ledger["reason"].isin(NOT_SIGNAL_REASONS)].drop_duplicates("study_id")
    excl = signal_excl.set_index("study_id")
    hit = study.isin(excl.index) & (out["prev_sample_id"] < 0)
    hit &= records["path"].str.strip().eq(excl["path"].reindex(study).str.strip().to_numpy())  # the same file
    out.loc[hit, "prev_reason"] = excl.loc[study[hit], "reason"].to_numpy()
    out.loc[hit, "prev_detail"] = excl.loc[study[hit], "detail"].to_numpy()
    return out


def previous_signals(prev_dir: str, sample_ids: np.ndarray) -> np.ndarray:
    """The stored signals (float16 rows) of ``sample_ids`` from the previous version's shards, in order."""
    import pyarrow.dataset as pads

    from ecgka.data.shards import signal_array

    ds = DatasetDir(prev_dir)
    files = [str(p) for s in SPLITS for p in ds.shards(s)]
    ids = np.asarray(sample_ids, np.int64)
    col = pads.field(Col.SAMPLE_ID.value)
    flt = (col >= int(ids.min())) & (col <= int(ids.max())) & col.isin(ids.tolist())
    table = pads.dataset(files, format="parquet").to_table(columns=[Col.SAMPLE_ID.value, Col.SIGNAL.value], filter=flt)
    got = table.column(Col.SAMPLE_ID.value).to_numpy()
    if len(np.unique(got)) != len(np.unique(ids)):
        raise InputError(f"{prev_dir}: previous version lacks {len(np.unique(ids)) - len(np.unique(got))} of the "
                         "ECGs it lists (its shards changed?)")
    rows = signal_array(table, 1)
    pos = pd.Series(np.arange(len(got)), index=got)
    return rows.reshape(len(got), -1)[pos.loc[ids].to_numpy()]


def _hash_subject(salt: str, subject: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{subject}".encode()).digest()[:8], "big")


def subject_rank(subjects: np.ndarray, salt: str) -> pd.Series:
    """The deterministic draw order of new subjects: a salted hash of ``subject_id``."""
    return pd.Series([_hash_subject(salt, int(s)) for s in subjects], index=subjects, dtype=object)


def split_changes(old: pd.DataFrame | None, new: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per split: pairs ``added``, ``removed``, ``changed`` (another lab or value; by ``study_id``) and
    ``subjects_new`` (subjects not in that split before)."""
    out = {}
    value_cols = [Col.LAB_TIME.value, Col.ITEMID.value, Col.POTASSIUM.value]
    for split in SPLITS:
        n = new[new["split"] == split].set_index(Col.STUDY_ID.value)
        o = (old[old["split"] == split] if old is not None else new.iloc[:0]).set_index(Col.STUDY_ID.value)
        both = n.index.intersection(o.index)
        diff = (n.loc[both, value_cols] != o.loc[both, value_cols]).any(axis=1)
        out[split] = {"pairs": len(n), "added": int((~n.index.isin(o.index)).sum()),
                      "removed": int((~o.index.isin(n.index)).sum()), "changed": int(diff.sum()),
                      "subjects_new": int(len(set(n[Col.SUBJECT_ID.value]) - set(o[Col.SUBJECT_ID.value])))}
    return out


def pairs_digest(pairs: pd.DataFrame) -> str:
    """SHA-256 of the pairs (study, subject, split, lab time, item, value), in study order."""
    p = pairs.sort_values(Col.STUDY_ID.value, kind="stable")
    h = hashlib.sha256()
    for col, dtype in ((Col.STUDY_ID.value, np.int64), (Col.SUBJECT_ID.value, np.int64), (Col.LAB_TIME.value, np.int64),
                       (Col.ITEMID.value, np.int32), (Col.POTASSIUM.value, np.float32)):
        h.update(np.ascontiguousarray(p[col].to_numpy(dtype)).tobytes())
    h.update("\n".join(p["split"].astype(str)).encode())
    return h.hexdigest()


@dataclass
class Version:
    """What makes a build a version: its exports, its parent (or none) and the split salt."""

    exports: list[dict[str, Any]]
    salt: str
    labs: LabTable
    previous: Previous | None = None
    lab_changes: dict[str, int] = field(default_factory=dict)
    config_changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def assign(self, meta: pd.DataFrame, cfg: BuildConfig) -> np.ndarray:
        """Splits: the first version draws as always; a later one keeps every subject's split."""
        if self.previous is None:
            return assign_splits(meta, cfg.split, cfg.label.grid)
        prior = self.previous.pairs.drop_duplicates(Col.SUBJECT_ID.value).set_index(Col.SUBJECT_ID.value)["split"]
        return assign_splits_stable(meta, cfg.split, cfg.label.grid, prior.to_dict(),
                                    lambda s: subject_rank(s, self.salt))

    def manifest_block(self, cfg: BuildConfig, pairs: pd.DataFrame) -> dict[str, Any]:
        """``digest``, ``created``, ``exports``, ``parent``, ``split_salt``, ``changes`` and ``lab_changes``."""
        digest = config_hash({"config": data_config(cfg), "exports": sorted(e["sha256"] for e in self.exports),
                              "pairs": pairs_digest(pairs)})
        prev = self.previous
        parent = None if prev is None else {"path": str(prev.ds.path.resolve()), "digest": prev.digest,
                                            "fingerprint": prev.manifest["fingerprint"]}
        return {"digest": digest, "created": utc_now(),
                "exports": self.exports, "parent": parent, "split_salt": self.salt,
                "changes": split_changes(prev.pairs if prev else None, pairs), "lab_changes": self.lab_changes,
                "config_changes": self.config_changes}
