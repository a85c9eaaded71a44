"""``ecgka report CHAMPION CHALLENGER --compare``: two evaluated runs side by side.

Both runs must have been evaluated on the same samples (the same dataset split: the same sample ids); each
compared metric (``comparison.PAIR_METRICS``) is read from the runs' metrics.json, the delta is challenger
- champion and its 95 % CI is the paired subject bootstrap of ``ecgka.metrics.paired`` (both models on the
same resampled subjects). This is the one part of the report that opens predictions (to resample them): only
the aggregates are written, checked for the runs' subject ids and for dates.

A gate is applied when the caller passes its decision function (``gate(champion_metrics,
challenger_metrics, paired)``: ``ecgka report --gate FILE`` passes the release gate's); else the page says
"no gate applied".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ecgka.catalog import RunDir
from ecgka.config import config_hash
from ecgka.errors import InputError
from ecgka.keys import PredCol
from ecgka.metrics.paired import PairedPredictions, metric_cases, metric_value, paired_ci
from ecgka.report import comparison, privacy
from ecgka.report.collect import RunEntry, check_distinct, evaluation_key, load_run

Gate = Callable[[dict, dict, PairedPredictions], dict]
USAGE = "`ecgka report CHAMPION_RUN CHALLENGER_RUN --compare --out DIR`"


def _side(run_dir: str | Path, split: str, dataset: str | None) -> tuple[RunEntry, pd.DataFrame, str | None]:
    """One run: its report entry, its predictions on ``split`` and the evaluation it came from."""
    key = evaluation_key(RunDir(run_dir), split, dataset)
    entry = load_run(run_dir, split, key)
    path = RunDir(run_dir).predictions_path(split, key)
    if not path.is_file():
        raise InputError(f"{path}: not found (the paired CIs need the run's predictions); run `ecgka evaluate "
                         f"{run_dir} --data DIR{' --allow-other-dataset' if key else ''} --split {split}` again")
    cols = [c.value for c in (PredCol.SAMPLE_ID, PredCol.SUBJECT_ID, PredCol.LABEL, PredCol.PREDICTION)]
    try:
        preds = pd.read_parquet(path, columns=cols)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: unreadable predictions ({str(e).splitlines()[0]}); run `ecgka evaluate "
                         f"{run_dir} --data DIR --split {split}` again") from None
    return entry, preds, key


def check_same_samples(champion: tuple[Path, RunEntry, pd.DataFrame], challenger: tuple[Path, RunEntry, pd.DataFrame],
                       split: str) -> None:
    """Refuse, in one line saying what to run, two evaluations of different samples."""
    (pa, ea, a), (pb, eb, b) = champion, challenger
    sid = PredCol.SAMPLE_ID.value
    ids_a, ids_b = set(a[sid].tolist()), set(b[sid].tolist())
    if ids_a == ids_b and len(a) == len(b):
        return
    shared = len(ids_a & ids_b)
    fa, fb = ea.fingerprint or "unknown", eb.fingerprint or "unknown"
    data = ea.run.get("dataset_dir") or "CHAMPION_DATA_DIR"
    head = f"{pa} and {pb} were not evaluated on the same {split} samples ({len(a)} and {len(b)} samples, {shared} shared"
    if fa != fb:
        raise InputError(f"{head}; datasets {fa} and {fb}): evaluate the challenger on the champion's dataset with "
                         f"`ecgka evaluate {pb} --data {data} --split {split} --allow-other-dataset`, then run "
                         f"`ecgka report {pa} {pb} --compare --split {split} --dataset {fa} --out DIR`")
    raise InputError(f"{head}, both of dataset {fa}): evaluate both again on the same dataset folder "
                     f"(`ecgka evaluate {pa} --data {data} --split {split}` and `ecgka evaluate {pb} --data {data} "
                     f"--split {split}`), then run `ecgka report {pa} {pb} --compare --split {split} --out DIR`")


def pair_result(champion: str | Path, challenger: str | Path, split: str = "test", dataset: str | None = None,
                n_boot: int = 1000, seed: int = 0, gate: Gate | None = None) -> tuple[dict, set[str]]:
    """The comparison of two evaluated runs in comparison.json's shape (rows with ``n``, lineage of both
    runs, the gate's decision or None, the bootstrap's settings) and the subject ids it must not show."""
    check_distinct([champion, challenger])
    (ea, a, _), (eb, b, _) = _side(champion, split, dataset), _side(challenger, split, dataset)
    check_same_samples((Path(champion), ea, a), (Path(challenger), eb, b), split)
    paired = PairedPredictions.from_frames(a, b, eb.metrics, f"{champion} and {challenger}")
    base, cand = ea.metrics, eb.metrics
    fp = eb.fingerprint or "unknown"
    rows = []
    for path, higher in comparison.PAIR_METRICS:
        vb, vc = metric_value(base, path), metric_value(cand, path)
        if vb is None and vc is None:  # not computed for this label (no clinical metrics for age)
            continue
        ci = paired_ci(path, paired, base, cand, n_boot=n_boot, seed=seed)
        rows.append({"dataset": fp, "fingerprint": fp, "split": split, "metric": path, "higher_is_better": higher,
                     "champion": vb, "challenger": vc, "delta": None if vb is None or vc is None else vc - vb,
                     "delta_ci_lower": ci["lower"], "delta_ci_upper": ci["upper"], "n": metric_cases(cand, path)})
    result = {"champion": f"{ea.display_name} ({champion})", "challenger": f"{eb.display_name} ({challenger})",
              "datasets": [fp], "rows": rows, "lineage": lineage(Path(champion), ea, "champion")
              + lineage(Path(challenger), eb, "challenger"), "gate": gate(base, cand, paired) if gate else None,
              "paired": {"n_boot": n_boot, "seed": seed, "level": 0.95, "unit": "subject", "n": len(a)}}
    return result, privacy.run_identifiers([champion, challenger])


def lineage(run_dir: Path, entry: RunEntry, role: str) -> list[str]:
    """The run's line (training dataset, evaluated dataset, weights) and its dataset's version chain."""
    model = entry.metrics.get("model") if isinstance(entry.metrics.get("model"), dict) else {}
    sha = model.get("checkpoint_sha256")
    data = entry.run.get("dataset_dir")
    lines = [f"{role} {run_dir}: trained on {data or 'an unrecorded dataset'} "
             f"({entry.run.get('dataset_fingerprint') or 'fingerprint unknown'}), evaluated on "
             f"{entry.fingerprint or 'unknown'}" + (f", weights SHA-256 {sha[:16]}..." if sha else "")]
    if data and Path(data).is_dir():
        try:
            from ecgka.data.lineage import lineage_lines

            lines += [f"  {line}" for line in lineage_lines(data)]
        except (InputError, OSError, KeyError, ValueError) as e:  # a moved or old dataset: the run's line only
            lines.append(f"  {data}: no lineage ({str(e).splitlines()[0]})")
    return lines


def write_pair_report(run_dirs, out_dir: str | Path, split: str = "test", *, dataset: str | None = None,
                      n_boot: int = 1000, seed: int = 0, gate: Gate | None = None, force: bool = False) -> Path:
    """The side-by-side report of ``run_dirs`` (champion, challenger) into ``out_dir``; returns report.html."""
    if len(run_dirs) != 2:
        raise InputError(f"--compare takes two evaluated runs, champion then challenger ({len(run_dirs)} given): "
                         f"{USAGE}")
    comparison.refuse_other_folders(run_dirs, compare=True)
    result, tokens = pair_result(run_dirs[0], run_dirs[1], split, dataset, n_boot, seed, gate)
    content = config_hash({"pair": [str(Path(d).resolve()) for d in run_dirs], "split": split, "dataset": dataset,
                           "n_boot": n_boot, "seed": seed, "gate": result["gate"] is not None})
    return comparison.write_result(result, out_dir, content, force=force, tokens=tokens)
