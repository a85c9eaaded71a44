"""``ecgka predict``: score ECGs that have no lab with a registered model (or a run).

Records go through the build's own reader, QC and cleaning (``ecgka.data.mimic_reader``,
``ecgka.data.signal_qc``, with the signal settings of the dataset the model was trained on) and are
stored as float16 exactly as the build stores them, then z-scored inside the portable model. A record
the build would exclude is kept as a row with its reason and no prediction. Each scored row carries the
predicted K, hypo/hyper flags at the operating points fixed on validation, the model version and the
dataset digest; with a model whose card holds a conformal layer (``uncertainty``, fitted on validation) also
the intervals ``k_lo_80 ... k_hi_95`` and the probabilities ``p_hypo``, ``p_hyper``, ``p_severe_hypo``,
``p_severe_hyper`` (:func:`uncertainty_columns`, the card's formula in numpy).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ecgka.catalog import DatasetDir
from ecgka.data.config import BuildConfig, SignalConfig
from ecgka.data.mimic_reader import RecordError, read_record
from ecgka.data.record_list import is_safe_relative, read_record_list, resolve_record
from ecgka.data.signal_qc import clean_batch, process_signal, to_stored
from ecgka.errors import InputError
from ecgka.io import atomic_path
from ecgka.metrics.clinical import CONDITIONS
from ecgka.metrics.conformal import LabelConditionalCPS, layer_from_json
from ecgka.training.prediction import full_fp32_matmul

ID_COLUMNS = ("subject_id", "study_id", "path")
FLAGS = ("hypo", "hyper")


@dataclass
class Scorer:
    """A portable model with what scoring needs from its card."""

    model: torch.nn.Module
    card: dict[str, Any]
    version: str | None
    signal: SignalConfig

    @property
    def leads(self) -> list[int]:
        return [self.signal.leads.index(lead) for lead in self.card["input"]["leads"]]

    @cached_property
    def layer(self) -> LabelConditionalCPS | None:
        """The card's conformal layer (None: a model registered or exported without one)."""
        return card_layer(self.card)

    def cut(self, name: str) -> float | None:
        """The condition's cut-off on predicted K (None when validation had no positive case to fix it)."""
        points = self.card.get("operating_points") or {}
        if not points:
            raise InputError(f"model {self.version or self.card['run']['path']}: no operating points in its card "
                             f"(run `ecgka evaluate RUN --data DIR` before exporting or registering)")
        return (points.get(name) or {}).get("threshold")


def card_layer(card: dict) -> LabelConditionalCPS | None:
    """The conformal layer of a card's ``uncertainty`` block (None when it has none)."""
    block = card.get("uncertainty")
    return layer_from_json(block.get("layer"), "card.json: uncertainty.layer") if block else None


def uncertainty_columns(card: dict, predictions) -> dict[str, np.ndarray]:
    """The interval, probability and accepted-set columns of predicted K from the card's conformal layer ({}
    without one): the numpy computation the card's ``uncertainty.formula`` spells out."""
    layer = card_layer(card)
    if layer is None:
        return {}
    preds = np.asarray(predictions, dtype=np.float64)
    return {**layer.columns(preds), **layer.sets(preds)}


def no_layer_note(scorer: Scorer) -> str | None:
    """One line when the model has no conformal layer (its scores then carry no intervals or probabilities)."""
    if scorer.layer is not None:
        return None
    return (f"model {scorer.version or scorer.card['run']['path']} has no conformal layer (card without "
            "'uncertainty': evaluate, then register or export it again): no interval or probability columns")


def signal_config(card: dict) -> SignalConfig:
    """The build's signal settings of the model's training dataset (its manifest's config)."""
    manifest = DatasetDir(card["dataset"]["path"]).read_manifest()
    try:
        return BuildConfig.model_validate(manifest.get("config") or {}).signal
    except ValueError:
        raise InputError(f"{card['dataset']['path']}: manifest holds no build config; predict needs the build's "
                         f"signal settings (a dataset made by `ecgka build`)") from None


def load_scorer(ref: str, device: str = "cpu") -> Scorer:
    """The model of ``REGISTRY@alias`` / ``REGISTRY@vN`` (its TorchScript export) or of a run folder."""
    from ecgka.catalog import RegistryDir
    from ecgka.release.card import build_card
    from ecgka.release.export import portable_model
    from ecgka.release.registry import parse_ref, resolve_model

    run_dir, record = resolve_model(ref)
    if record is not None:
        export = RegistryDir(parse_ref(ref)[0]).export_dir(record["version"])
        card, model = export.read_card(), torch.jit.load(str(export.model_path("torchscript")), map_location="cpu")
    else:
        model, in_channels = portable_model(run_dir)
        card = build_card(run_dir, in_channels, "torchscript")
    return Scorer(model.to(device).eval(), card, record["version"] if record else None, signal_config(card))


def read_records(ecg_root: Path, record_list: Path | None) -> pd.DataFrame:
    """The records to score: ``record_list.csv`` of the root, or a CSV with subject_id, study_id, path."""
    if record_list is None:
        return read_record_list(ecg_root).loc[:, list(ID_COLUMNS)].reset_index(drop=True)
    try:
        df = pd.read_csv(record_list, dtype={"path": str})
    except (OSError, ValueError) as exc:
        raise InputError(f"{record_list}: unreadable record list ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ID_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{record_list}: missing column(s) {', '.join(missing)} (needs {', '.join(ID_COLUMNS)})")
    return df.loc[:, list(ID_COLUMNS)].reset_index(drop=True)


def read_one(root: Path, path: str, cfg: SignalConfig) -> np.ndarray:
    """One record through the build's reader and QC (float64 mV [leads, n_samples], not yet cleaned)."""
    if not is_safe_relative(path):
        raise RecordError("unsafe_path", f"{path!r} escapes the ECG root")
    return process_signal(read_record(resolve_record(root, path), fast=cfg.fast_reader, root=root), cfg)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def score_batch(scorer: Scorer, root: Path, paths: list[str], device: str) -> tuple[np.ndarray, list[tuple]]:
    """Predicted K of one batch of records (NaN for an excluded one) and the exclusions (index, reason, detail)."""
    signals, kept, excluded = [], [], []
    for i, path in enumerate(paths):
        try:
            signals.append(read_one(root, path, scorer.signal))
            kept.append(i)
        except RecordError as exc:
            excluded.append((i, exc.reason, exc.detail[:300]))
    pred = np.full(len(paths), np.nan)
    if kept:
        cfg = scorer.signal
        stored = to_stored(clean_batch(np.stack(signals), cfg.fs, cfg))  # float16, as the shards hold it
        x = stored.reshape(len(kept), len(cfg.leads), cfg.n_samples)[:, scorer.leads].astype(np.float32)
        with torch.no_grad(), full_fp32_matmul():  # no TF32 on a GPU: the CPU's numbers within float32 rounding
            pred[kept] = scorer.model(torch.from_numpy(x).to(device)).float().cpu().numpy()
    return pred, excluded


def score_records(scorer: Scorer, ecg_root: Path, records: pd.DataFrame, device: str = "cpu",
                  batch_size: int = 256) -> pd.DataFrame:
    """One row per record: ids, predicted K, flags, model version and dataset digest, or the exclusion."""
    pred = np.full(len(records), np.nan)
    reason = np.full(len(records), None, dtype=object)
    detail = np.full(len(records), None, dtype=object)
    paths = records["path"].astype(str).tolist()
    for part in _batches(len(records), batch_size):
        values, excluded = score_batch(scorer, ecg_root, paths[part], device)
        pred[part] = values
        for i, why, text in excluded:
            reason[part.start + i], detail[part.start + i] = why, text
    out = records.copy()
    out["potassium_pred"] = pred
    for name in FLAGS:
        cond, cut = CONDITIONS[name], scorer.cut(name)
        flag = np.full(len(pred), False) if cut is None else (pred <= cut) if cond.low else (pred >= cut)
        out[f"{name}_flag"] = pd.array(np.where(np.isnan(pred) | (cut is None), None, flag), dtype="boolean")
        out[f"{name}_threshold"] = np.nan if cut is None else cut
    if scorer.layer is not None:
        for name, values in {**scorer.layer.columns(pred), **scorer.layer.sets(pred)}.items():
            out[name] = values
    out["excluded_reason"], out["excluded_detail"] = reason, detail
    out["model_version"] = scorer.version
    out["model_run"] = scorer.card["run"]["path"]
    out["dataset_digest"] = scorer.card["dataset"]["digest"]
    return out


def check_out(out: str | Path, force: bool = False) -> None:
    """Refuse, before anything is scored, an ``out`` that is a folder, or an existing file without ``force``."""
    path = Path(out)
    if path.is_dir():
        raise InputError(f"--out {out}: is a folder; give the scores' file name (e.g. {path / 'scores.parquet'})")
    if path.exists() and not force:
        raise InputError(f"--out {out}: exists; pass --force to replace it (or choose another file)")


def drop_duplicates(records: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The records with each (subject_id, study_id, path) row once, and how many repeated rows were dropped."""
    keep = ~records.astype(str).duplicated(subset=list(ID_COLUMNS))
    return records[keep].reset_index(drop=True), int((~keep).sum())


def predict_ecgs(model: str, ecg_root: str | Path, out: str | Path, record_list: str | Path | None = None,
                 device: str = "cpu", batch_size: int = 256, force: bool = False) -> pd.DataFrame:
    """Score every record of ``ecg_root`` (or of ``record_list``) and write ``out`` (Parquet, atomically).

    An existing ``out`` file is replaced only with ``force``; a folder is refused. A record row given more
    than once is scored once: the table's ``attrs["duplicates"]`` counts the rows dropped."""
    from ecgka.training.build import resolve_device

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be an integer >= 1")
    check_out(out, force)
    dev = str(resolve_device(device))
    records, duplicates = drop_duplicates(read_records(Path(ecg_root), Path(record_list) if record_list else None))
    scorer = load_scorer(model, dev)
    table = score_records(scorer, Path(ecg_root), records, dev, batch_size)
    table.attrs["duplicates"] = duplicates
    table.attrs["note"] = no_layer_note(scorer)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    return table


__all__ = ["predict_ecgs", "score_records", "load_scorer", "uncertainty_columns"]
