"""``ecgka predict --model REGISTRY@champion|RUN_DIR --ecg-root DIR [--record-list CSV] --out FILE.parquet``."""

from __future__ import annotations

import argparse

HELP = ("score ECGs without a lab (the build's reader, QC and cleaning); rows hold the predicted K, hypo/hyper "
        "flags at the validation operating points, the model version and the dataset digest, or an exclusion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="REF", help="REGISTRY@champion, REGISTRY@v3 or a run folder")
    parser.add_argument("--ecg-root", required=True, metavar="DIR", help="root of the WFDB records")
    parser.add_argument("--record-list", metavar="CSV",
                        help="records to score (subject_id, study_id, path); default: DIR/record_list.csv")
    parser.add_argument("--out", required=True, metavar="FILE.parquet")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--batch-size", type=int, default=256)


def run(args: argparse.Namespace) -> int:
    from ecgka.release.scoring import predict_ecgs

    table = predict_ecgs(args.model, args.ecg_root, args.out, args.record_list, args.device, args.batch_size)
    excluded = table["excluded_reason"].notna()
    reasons = table.loc[excluded, "excluded_reason"].value_counts().to_dict()
    print(f"scored {int((~excluded).sum())} ECG(s), excluded {int(excluded.sum())}"
          + (f" ({', '.join(f'{k}: {v}' for k, v in reasons.items())})" if reasons else "") + f": wrote {args.out}")
    return 0
