"""``ecgka evaluate RUN_DIR [key=value ...] --data DIR [--split test] [--config FILE]``.

Overrides follow RUN_DIR directly (argparse does not take positionals after an option's value).
"""

from __future__ import annotations

from ecgka.cli.options import Command, EvaluateCommand


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
    print(f"wrote {where / RunDir.METRICS}")
    return 0


COMMAND = Command(EvaluateCommand, run)
