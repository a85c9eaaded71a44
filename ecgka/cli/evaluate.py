"""``ecgka evaluate RUN_DIR [key=value ...] --data DIR [--split test] [--config FILE]``.

Overrides follow RUN_DIR directly (argparse does not take positionals after an option's value).
"""

from __future__ import annotations

from ecgka.cli.options import Command, EvaluateCommand


def print_coverage(block: dict | None, unit: str, level: float = 0.9) -> None:
    """One line: the calibrated intervals' coverage and mean width per range at ``level``, and the coverage of
    the accepted sets (their hulls are the intervals) when known."""
    rows = [r for r in (block or {}).get("coverage", []) if r["level"] == level and r["n"]]
    if rows:
        tag = " (in-sample)" if block.get("in_sample") else ""
        print(f"  {level:.0%} intervals{tag}: " + "  ".join(
            f"{r['range']} {r['coverage']:.2f} ({r['mean_width']:.2f} {unit}"
            + (f"; set {r['set_coverage']:.2f}" if r.get("set_coverage") is not None else "") + f", n={r['n']})"
            for r in rows))


def run(o: EvaluateCommand) -> int:
    cfg = o.load_config()
    from ecgka.catalog import RunDir  # heavier: after the options are known to be valid
    from ecgka.evaluation.evaluate import eval_dir_of

    metrics = o.execute(cfg=cfg, allow_other_dataset=o.allow_other_dataset)
    where = eval_dir_of(o.run, metrics)
    if metrics["dataset"].get("matches_training") is False:
        print(f"evaluated on dataset {metrics['dataset'].get('fingerprint')}, not the run's training dataset "
              f"({metrics['run'].get('dataset_fingerprint')}): written to {where} "
              f"(report it with `ecgka report ... --dataset {metrics['dataset'].get('fingerprint')}`)")
    reg = metrics["regression"]
    print(f"{o.split}: n={metrics['n']}  " + "  ".join(
        f"MAE {g} {reg[g]['mae']:.3f} (n={reg[g]['n']})" if reg[g]["mae"] is not None else f"MAE {g} - (n=0)"
        for g in ("all", "many", "median", "few")))
    for name, c in (metrics["clinical"] or {}).get("conditions", {}).items():
        auc, ci = c["auroc"], c["auroc_ci"]
        text = "-" if auc is None else f"{auc:.3f}"
        if ci["lower"] is not None:
            text += f" [{ci['lower']:.3f}, {ci['upper']:.3f}]"
        print(f"  {name}: AUROC {text} (positives {c['n_positive']})")
    print_coverage(metrics.get("uncertainty"), metrics["dataset"]["label"]["unit"])
    print(f"wrote {where / RunDir.METRICS}")
    return 0


COMMAND = Command(EvaluateCommand, run)
