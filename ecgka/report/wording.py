"""How the report names its label, unit and samples: one entry per label (the dataset grid's ``name``).

The potassium wording is the ECG report's; ``age`` is the face-age benchmarks' (years, images, no clinical
section). A label without an entry gets a neutral wording from its grid. Whether the clinical section
appears is ``ecgka.metrics.clinical.applies_to`` (a runs' metrics.json then has ``clinical``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ecgka.catalog.info import DatasetInfo


@dataclass(frozen=True)
class Wording:
    label: str  # "potassium"
    unit: str  # "mmol/L"
    symbol: str  # the short axis name: "K"
    samples: str  # "ECGs"
    reference: str  # the measured value's adjective: "laboratory"
    title: str
    intended_use: str
    limits: tuple[str, ...] = field(default_factory=tuple)


POTASSIUM = Wording(
    "potassium", "mmol/L", "K", "ECGs", "laboratory", "ECG potassium regression: evaluation report",
    "Research on estimating serum potassium from the ECG and on imbalanced regression (Dist Loss "
    "against the baselines). Screening aid hypotheses only: not a diagnostic device, not validated "
    "for clinical decisions; a laboratory measurement remains the reference.",
    ("Trained and evaluated on one source (MIMIC-IV-ECG paired with MIMIC-IV labs, or a synthetic "
     "stand-in): performance elsewhere is unknown.",
     "Validation and test sets are balanced over potassium bins, so PPV/NPV reflect that balance, "
     "not clinical prevalence.",
     "The ECG-lab pairing window allows potassium to change between the ECG and the draw.",
     "Few-shot (hypo/hyperkalaemic) regions hold few ECGs: their metrics have wide intervals.",
     "Operating points are fixed on the validation split for a target sensitivity and are not "
     "re-tuned on test."))

AGE = Wording(
    "age", "years", "age", "images", "true", "Face-age regression: evaluation report",
    "Research on imbalanced regression on the face-age benchmarks (AgeDB-DIR, IMDB-WIKI-DIR): Dist Loss "
    "against the baselines. Not for estimating anyone's age in a decision about them.",
    ("Validation and test sets are balanced over ages (at most a fixed number per year).",
     "Few-shot ages hold few training images (< 20 per year): their metrics vary most."))

WORDINGS = {w.label: w for w in (POTASSIUM, AGE)}


def wording(dataset: DatasetInfo) -> Wording:
    """The wording of a dataset's label (its grid's name); neutral for an unknown label."""
    grid = dataset.grid
    return WORDINGS.get(grid.name) or Wording(grid.name, grid.unit, grid.name, "samples", "true",
                                              f"{grid.name} regression: evaluation report",
                                              "Research on imbalanced regression.")


def grid_text(dataset: DatasetInfo) -> str:
    """'0.1 mmol/L' or '1 years': the width of one label bin."""
    grid = dataset.grid
    return f"{grid.step:g} {grid.unit}"
