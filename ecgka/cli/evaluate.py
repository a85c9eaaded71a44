"""``ecgka evaluate RUN_DIR [key=value ...] --data DIR [--split test] [--config FILE]``.

Overrides follow RUN_DIR directly (argparse does not take positionals after an option's value).
"""

from __future__ import annotations

import argparse

from ecgka.keys import SPLITS

HELP = ("predict a split with a trained run and write its predictions and metrics.json into the run "
        "(few-shot MAE/MSE/GM, hypo/hyperkalaemia detection with subject-bootstrap CIs)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `ecgka train`")
    parser.add_argument("--data", required=True, metavar="DIR", help="the dataset: a directory of `ecgka build`, an age split CSV or an `ecgka age pack` folder")
    parser.add_argument("--split", default="test", choices=list(SPLITS),
                        help="split to evaluate (default test; operating points are fixed on val)")
    parser.add_argument("--config", metavar="FILE", help="YAML with evaluation options (EvalConfig)")
    parser.add_argument("--allow-other-dataset", action="store_true",
                        help="evaluate on a dataset the run was not trained on; written to RUN/eval/<fingerprint>/ "
                             "(the run's own eval/ stays as it is)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="e.g. n_boot=2000 target_sensitivity=0.95 checkpoint=last device=cpu many=0.4 "
                             "(shot cut-offs default to the dataset manifest's)")


def run(args: argparse.Namespace) -> int:
    from ecgka.config import load_config
    from ecgka.evaluation.config import EvalConfig

    cfg = load_config(EvalConfig, args.config, args.overrides)
    from ecgka.catalog import RunDir  # heavier: after the options are known to be valid
    from ecgka.evaluation.evaluate import eval_dir_of, evaluate_run
    metrics = evaluate_run(args.run_dir, args.data, args.split, cfg, allow_other_dataset=args.allow_other_dataset)
    where = eval_dir_of(args.run_dir, metrics)
    if metrics["dataset"].get("matches_training") is False:
        print(f"evaluated on dataset {metrics['dataset'].get('fingerprint')}, not the run's training dataset "
              f"({metrics['run'].get('dataset_fingerprint')}): written to {where} "
              f"(report it with `ecgka report ... --dataset {metrics['dataset'].get('fingerprint')}`)")
    reg = metrics["regression"]
    print(f"{args.split}: n={metrics['n']}  " + "  ".join(
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
