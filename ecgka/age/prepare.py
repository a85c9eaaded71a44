"""``ecgka age prepare``: metadata + the balanced rule -> a DIR split CSV ``age,path,split``."""

from __future__ import annotations

from pathlib import Path

from ecgka.age.metadata import SOURCES, check_rules, metadata_from_csv
from ecgka.age.split import CAPS, MAX_AGE, balanced_split
from ecgka.errors import InputError
from ecgka.io import atomic_write_text
from ecgka.names import look_up_option


def prepare_split(dataset: str, out: str | Path, *, images: str | Path | None = None,
                  metadata: str | Path | None = None, rules: str = "ecgka") -> dict:
    """Write ``out`` (rows in metadata order; rows with an age outside 0..120 get no split and are left
    out) and return the counts per split. ``rules="released"`` (``ecgka.age.metadata.RULES``): IMDB-WIKI
    rows with a NaN face score are kept and ages 121-200 go to train, as the released script does."""
    check_rules(rules)
    dataset = look_up_option(dataset, list(CAPS), "age dataset")
    if (images is None) == (metadata is None):
        raise InputError("give exactly one of --images DIR and --metadata CSV")
    if metadata is not None:
        table = metadata_from_csv(Path(metadata))
    elif dataset == "imdb-wiki":
        table = SOURCES.get(dataset)(Path(images), rules=rules)
    else:
        table = SOURCES.get(dataset)(Path(images))
    table["split"] = balanced_split(table["age"].tolist(), CAPS[dataset])
    if rules == "released":  # every row the balanced rule does not place is train (ages 121-200)
        table.loc[table["split"].isna() & (table["age"] > MAX_AGE), "split"] = "train"
    kept = table.dropna(subset=["split"])
    atomic_write_text(Path(out), kept.to_csv(index=False, lineterminator="\n"))
    counts = {s: int((kept["split"] == s).sum()) for s in ("train", "val", "test")}
    return {"out": str(out), "dataset": dataset, **counts, "no_split": int(len(table) - len(kept))}
