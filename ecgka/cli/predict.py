"""``ecgka predict --model REGISTRY@champion|RUN_DIR --ecg-root DIR [--record-list CSV] --out FILE.parquet``."""

from __future__ import annotations

from ecgka.cli.options import Command, PredictOptions


def run(o: PredictOptions) -> int:
    from ecgka.release.scoring import predict_ecgs

    table = predict_ecgs(o.model, o.ecg_root, o.out, o.record_list, o.device, o.batch_size)
    excluded = table["excluded_reason"].notna()
    reasons = table.loc[excluded, "excluded_reason"].value_counts().to_dict()
    print(f"scored {int((~excluded).sum())} ECG(s), excluded {int(excluded.sum())}"
          + (f" ({', '.join(f'{k}: {v}' for k, v in reasons.items())})" if reasons else "") + f": wrote {o.out}")
    return 0


COMMAND = Command(PredictOptions, run)
