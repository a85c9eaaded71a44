"""``hosp/labevents.csv.gz`` rows and ``hosp/d_labitems.csv.gz`` for one subject, with MIMIC's quirks.

Each blood draw gives a chemistry panel (potassium 50971 and the usual electrolytes, so filtering by
itemid matters), sometimes a blood gas (potassium 50822, which differs from chemistry by sd ~0.4) and
sometimes a urine potassium. Quirks: ``___`` in ``value`` with a numeric ``valuenum``, empty optional
fields, storetime after charttime, haemolysis comments on ~1.8 % of chemistry potassium rows (falsely
elevated), "Specimen not hemolyzed" comments, a few implausible values and duplicated rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from ecgka.standin.ids import Ids
from ecgka.standin.timeline import SubjectPlan

LAB_COLUMNS = (
    "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id", "charttime",
    "storetime", "value", "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag", "priority",
    "comments",
)
D_LABITEMS_COLUMNS = ("itemid", "label", "fluid", "category")
K_CHEM, K_GAS, K_CHEM_NEW, K_URINE = 50971, 50822, 52610, 51097
HAEMOLYSIS_RATE = 0.018
HAEMOLYSIS_COMMENTS = (
    "HEMOLYSIS FALSELY ELEVATES K",
    "Slightly hemolyzed specimen",
    "Moderately hemolyzed specimen.  HEMOLYSIS FALSELY ELEVATES K",
)


@dataclass(frozen=True)
class Analyte:
    itemid: int
    label: str
    fluid: str
    category: str
    unit: str
    ref: tuple[str, str]  # ("", "") when the lab reports none
    decimals: int


ANALYTES: dict[int, Analyte] = {
    a.itemid: a
    for a in (
        Analyte(K_CHEM, "Potassium", "Blood", "Chemistry", "mEq/L", ("3.3", "5.1"), 1),
        Analyte(K_GAS, "Potassium, Whole Blood", "Blood", "Blood Gas", "mEq/L", ("3.5", "5.0"), 1),
        Analyte(K_CHEM_NEW, "Potassium", "Blood", "Chemistry", "mEq/L", ("3.5", "5.2"), 1),
        Analyte(K_URINE, "Potassium, Urine", "Urine", "Chemistry", "mEq/L", ("", ""), 0),
        Analyte(50983, "Sodium", "Blood", "Chemistry", "mEq/L", ("133", "145"), 0),
        Analyte(50824, "Sodium, Whole Blood", "Blood", "Blood Gas", "mEq/L", ("136", "145"), 0),
        Analyte(50902, "Chloride", "Blood", "Chemistry", "mEq/L", ("96", "108"), 0),
        Analyte(50882, "Bicarbonate", "Blood", "Chemistry", "mEq/L", ("22", "32"), 0),
        Analyte(50912, "Creatinine", "Blood", "Chemistry", "mg/dL", ("0.5", "1.2"), 1),
        Analyte(51006, "Urea Nitrogen", "Blood", "Chemistry", "mg/dL", ("6", "20"), 0),
        Analyte(50931, "Glucose", "Blood", "Chemistry", "mg/dL", ("70", "100"), 0),
        Analyte(50960, "Magnesium", "Blood", "Chemistry", "mg/dL", ("1.6", "2.6"), 1),
    )
}
# non-potassium analytes: (itemid, distribution, a, b) with value = normal(a, b) or lognormal(log a, b)
_OTHERS = ((50983, "n", 139, 3.5), (50902, "n", 102, 4.0), (50882, "n", 25, 3.5), (50912, "ln", 1.0, 0.5),
           (51006, "ln", 17, 0.5), (50931, "ln", 115, 0.3))


def d_labitems_rows() -> list[tuple]:
    return [(a.itemid, a.label, a.fluid, a.category) for a in sorted(ANALYTES.values(), key=lambda a: a.itemid)]


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


class _SubjectLabs:
    """Builds the rows of one subject; labevent_id is left as None and assigned when streaming."""

    def __init__(self, plan: SubjectPlan, subject_id: int, hadm_ids: list, ids: Ids, rng):
        self.plan, self.subject_id, self.hadm_ids, self.ids, self.rng = plan, subject_id, hadm_ids, ids, rng
        self.rows: list[list] = []
        self._draw: int | None = None  # index of the draw being written (for its episode's hadm_id)
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        self.provider = "P" + "".join(alphabet[i] for i in rng.integers(0, 36, 5)) if rng.random() < 0.6 else ""

    def row(self, itemid: int, t: float, stat: bool, spec: int, value: float, comments: str = "") -> list:
        a, rng = ANALYTES[itemid], self.rng
        chart = self.plan.datetime_at(t).replace(second=0, microsecond=0)
        store = "" if rng.random() < 0.01 else chart + timedelta(minutes=int(rng.lognormal(np.log(45), 0.6)) + 1)
        num = round(float(value), a.decimals)
        lo, hi = a.ref
        flag = "abnormal" if lo and not (float(lo) <= num <= float(hi)) else ""
        priority = "" if rng.random() < 0.08 else ("STAT" if stat else "ROUTINE")
        text = "___" if rng.random() < 0.02 else _fmt(num, a.decimals)
        ep = int(self.plan.draw_episode[self._draw]) if self._draw is not None else -1
        hadm = self.hadm_ids[ep] if ep >= 0 and self.hadm_ids[ep] is not None else ""
        out = [None, self.subject_id, hadm, spec, itemid, self.provider if rng.random() < 0.7 else "",
               f"{chart:%Y-%m-%d %H:%M:%S}", f"{store:%Y-%m-%d %H:%M:%S}" if store else "", text,
               _fmt(num, a.decimals), a.unit, lo, hi, flag, priority, comments]
        self.rows.append(out)
        return out

    def chemistry_potassium(self, t: float, k: float, stat: bool, spec: int) -> None:
        rng = self.rng
        value, comment = k + rng.normal(0, 0.1), ""
        u = rng.random()
        if u < HAEMOLYSIS_RATE:  # haemolysis releases intracellular potassium: falsely high
            value += rng.uniform(0.3, 1.8)
            comment = HAEMOLYSIS_COMMENTS[int(rng.integers(len(HAEMOLYSIS_COMMENTS)))]
        elif u < HAEMOLYSIS_RATE + 0.012:
            comment = "Specimen not hemolyzed"
        elif value > 6.0 and rng.random() < 0.3:
            comment = "VERIFIED BY REPLICATE ANALYSIS"
        if rng.random() < 0.004:  # implausible: analyser or transcription errors
            value = float(rng.choice([0.0, 0.3, 35.0, 44.0, 99.9]))
        itemid = K_CHEM_NEW if rng.random() < 0.04 else K_CHEM
        self.row(itemid, t, stat, spec, value, comment)

    def draw(self, i: int) -> None:
        p, rng = self.plan, self.rng
        self._draw = i
        t, k, stat = float(p.draw_times[i]), float(p.draw_k[i]), bool(p.draw_stat[i])
        if rng.random() < 0.9:
            spec = self.ids.next_specimen()
            if rng.random() < 0.97:
                self.chemistry_potassium(t, k, stat, spec)
            renal = max(p.baseline - 4.1, 0.0) * 4
            for itemid, dist, a, b in _OTHERS:
                v = rng.normal(a, b) if dist == "n" else rng.lognormal(np.log(a * (1 + renal)), b)
                self.row(itemid, t, stat, spec, max(v, 0.1))
            if rng.random() < 0.3:
                self.row(50960, t, stat, spec, rng.normal(2.0, 0.25))
        if rng.random() < 0.15 + 0.2 * stat:
            spec = self.ids.next_specimen()
            tg = t + rng.uniform(-20, 20)
            self.row(K_GAS, tg, True, spec, k + rng.normal(0, 0.38))
            self.row(50824, tg, True, spec, rng.normal(138, 4))
        if rng.random() < 0.03:
            self.row(K_URINE, t, stat, self.ids.next_specimen(), rng.lognormal(np.log(40), 0.5))
        self._draw = None

    def duplicates(self) -> None:
        """A few rows appear twice (same content, a new labevent_id), as in the real export."""
        extra = [list(r) for r in self.rows if self.rng.random() < 0.004]
        self.rows.extend(extra)


def subject_lab_rows(plan: SubjectPlan, subject_id: int, hadm_ids: list, ids: Ids, seed: int) -> list[list]:
    """All labevents rows of one subject, sorted by charttime then itemid (labevent_id still None)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, plan.index)))
    labs = _SubjectLabs(plan, subject_id, hadm_ids, ids, rng)
    for i in range(plan.draw_times.size):
        labs.draw(i)
    labs.duplicates()
    labs.rows.sort(key=lambda r: (r[6], r[4]))
    return labs.rows
