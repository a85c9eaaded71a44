"""``ecgka predict --model REGISTRY@champion|RUN_DIR --ecg-root DIR [--record-list CSV] --out FILE.parquet
[--force]``."""

from __future__ import annotations

from ecgka.cli.options import Command, PredictOptions


def run(o: PredictOptions) -> int:
    from ecgka.release.scoring import predict_ecgs

    table = predict_ecgs(o.model, o.ecg_root, o.out, o.record_list, o.device, o.batch_size, o.force)
    excluded = table["excluded_reason"].notna()
    reasons = table.loc[excluded, "excluded_reason"].value_counts().to_dict()
    duplicates = table.attrs.get("duplicates", 0)
    if table.attrs.get("note"):
        print(f"note: {table.attrs['note']}")
    print(f"scored {int((~excluded).sum())} ECG(s), excluded {int(excluded.sum())}"
          + (f" ({', '.join(f'{k}: {v}' for k, v in reasons.items())})" if reasons else "")
          + (f", {duplicates} duplicate record row(s) scored once" if duplicates else "") + f": wrote {o.out}")
    return 0


COMMAND = Command(PredictOptions, run)
