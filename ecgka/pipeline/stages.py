"""Stage kinds of a pipeline: how each kind's options are typed, where its output lives, how it runs.

Each kind calls the same Python entry point as its CLI command, so a pipeline stage and the command
produce identical outputs. Stage APIs are imported lazily (no torch import to run a synth stage). Whether
a stage's output is complete is read through the catalog (``ecgka.catalog``), which alone knows the file
names of dataset, run and report folders.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ecgka.catalog import ComparisonDir, DatasetDir, FolderKind, ReportDir, RunDir, claim_folder
from ecgka.config import ConfigModel
from ecgka.errors import InputError
from ecgka.names import NameTable


class SynthOptions(ConfigModel):
    subjects: int = 300
    seed: int = 0
    workers: int | None = None


class SynthAgeOptions(ConfigModel):
    """``ecgka synth-age``: the face-age stand-in (``STAGE/age_dir.csv`` and its images)."""

    n: int = 1000
    seed: int = 0
    size: int = 32


class BuildOptions(ConfigModel):
    ecg_root: str
    labs: list[str]
    d_labitems: str | None = None
    config: str | None = None
    overrides: list[str] = []
    workers: int | None = None
    dask_scheduler: str | None = None
    previous: str | None = None  # a dataset version this build extends (``ecgka build --previous``)


class TrainOptions(ConfigModel):
    config: str
    data: str
    init: str | None = None
    overrides: list[str] = []


class EvaluateOptions(ConfigModel):
    run: str
    data: str
    split: str = "test"


class ReportOptions(ConfigModel):
    runs: list[str]
    title: str | None = None


@dataclass(frozen=True)
class StageKind:
    """A kind of stage: its typed options, its output location, its runner and its completeness test."""

    options_model: type[BaseModel]
    run: Callable[[Any, Path], None]
    is_complete: Callable[[Any, Path], bool]
    output_of: Callable[[Any, Path], Path] = lambda options, default: default
    # option names whose values are external inputs (their size and time join the fingerprint)
    file_options: tuple[str, ...] = ()
    # option names that name paths which must exist before the job starts, unless the value is an
    # earlier stage's output (a ``${stage}`` reference), which is made by the job itself
    input_options: tuple[str, ...] = ()
    # the fully resolved config of the stage (defaults, ``extends`` and overrides applied), fingerprinted
    resolved_config: Callable[[Any], dict[str, Any]] = lambda options: {}
    # called before re-running a stage whose inputs or config changed (or with --force); stages that
    # resume by themselves must not resume work made from other inputs
    reset: Callable[[Path], None] = lambda out: None


def _remove(out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out)


STAGE_KINDS: NameTable[StageKind] = NameTable("stage kind")


def _run_synth(o: SynthOptions, out: Path) -> None:
    from ecgka.standin import generate_standin

    if out.exists():  # a stand-in is written atomically: a leftover without a marker is redone
        shutil.rmtree(out)
    generate_standin(out, subjects=o.subjects, seed=o.seed, workers=o.workers)


def _run_synth_age(o: SynthAgeOptions, out: Path) -> None:
    from ecgka.age.standin import generate_age_standin

    if out.exists():  # written atomically: a leftover without a marker is redone
        shutil.rmtree(out)
    generate_age_standin(out, n=o.n, seed=o.seed, size=o.size)


def _synth_age_complete(o: SynthAgeOptions, out: Path) -> bool:
    from ecgka.age.standin import CSV_NAME

    return (out / CSV_NAME).is_file()


def _build_config(o: BuildOptions) -> Any:
    from ecgka.config import load_config
    from ecgka.data.config import BuildConfig

    return load_config(BuildConfig, o.config, o.overrides, override_source="overrides")


def _run_build(o: BuildOptions, out: Path) -> None:
    from ecgka.data.build import build_dataset

    build_dataset(Path(o.ecg_root), [Path(p) for p in o.labs], out, _build_config(o),
                  workers=o.workers, dask_scheduler=o.dask_scheduler, d_labitems=o.d_labitems, progress=True,
                  **({"previous": Path(o.previous)} if o.previous else {}))


def _train_config(o: TrainOptions) -> Any:
    from ecgka.training import load_train_config

    return load_train_config(o.config, o.overrides, override_source="overrides")


def _run_train(o: TrainOptions, out: Path) -> None:
    from ecgka.training import train_run

    train_run(_train_config(o), Path(o.data), out, init=Path(o.init) if o.init else None)


def _run_evaluate(o: EvaluateOptions, out: Path) -> None:
    from ecgka.evaluation import evaluate_run

    evaluate_run(Path(o.run), Path(o.data), split=o.split)


def _run_report(o: ReportOptions, out: Path) -> None:
    from ecgka.report import write_report

    write_report([Path(r) for r in o.runs], out, title=o.title)


def _synth_complete(o: SynthOptions, out: Path) -> bool:
    from ecgka.standin import standin_complete

    return standin_complete(out)


def _build_complete(o: BuildOptions, out: Path) -> bool:
    dataset = DatasetDir(out)
    return dataset.manifest_or_none() is not None and dataset.exclusions_path.is_file()


def _train_complete(o: TrainOptions, out: Path) -> bool:
    run = RunDir(out)
    try:
        return run.read_run().get("status") == "complete"
    except InputError:  # no run.json yet (or an unreadable one): the stage runs and resumes
        return False


def _evaluate_complete(o: EvaluateOptions, out: Path) -> bool:
    return RunDir(o.run).metrics_path(o.split).is_file()


def _report_complete(o: ReportOptions, out: Path) -> bool:
    return ReportDir(out).html.is_file()


STAGE_KINDS.register("synth")(StageKind(SynthOptions, _run_synth, _synth_complete))
STAGE_KINDS.register("synth_age")(StageKind(SynthAgeOptions, _run_synth_age, _synth_age_complete))
STAGE_KINDS.register("build")(
    StageKind(BuildOptions, _run_build, _build_complete, file_options=("labs", "d_labitems"),
              input_options=("ecg_root", "labs", "d_labitems", "config", "previous"), reset=_remove,
              resolved_config=lambda o: _build_config(o).model_dump(mode="json"))
)
STAGE_KINDS.register("train")(
    StageKind(TrainOptions, _run_train, _train_complete, input_options=("config", "data", "init"),
              resolved_config=lambda o: _train_config(o).model_dump(mode="json"), reset=_remove)
)
STAGE_KINDS.register("evaluate")(
    StageKind(EvaluateOptions, _run_evaluate, _evaluate_complete, input_options=("run", "data"),
              output_of=lambda o, default: RunDir(o.run).eval_dir(o.split))
)
STAGE_KINDS.register("report")(
    StageKind(ReportOptions, _run_report, _report_complete, input_options=("runs",), reset=_remove)
)


# ---- retraining: the challenger, the registry, the comparison and the gate (docs/retraining.md) ----------


class ChallengerOptions(ConfigModel):
    """Train the challenger: fine-tuned from the registry's champion (``init: champion``; from scratch while
    there is none) or from scratch (``init: scratch``)."""

    config: str
    data: str
    registry: str
    init: Literal["champion", "scratch"] = "champion"
    init_mode: Literal["full", "head"] = "full"  # full: fine-tune every weight; head: the two-stage scheme
    overrides: list[str] = []

    def train_options(self) -> TrainOptions:
        return TrainOptions(config=self.config, data=self.data, overrides=[f"init.mode={self.init_mode}",
                                                                             *self.overrides])


class RegisterOptions(ConfigModel):
    registry: str
    run: str
    checkpoint: Literal["best", "last"] = "best"
    note: str | None = None


class CompareOptions(ConfigModel):
    """Champion (from the registry) vs challenger on the test split of each dataset (the first decides)."""

    registry: str
    challenger: str
    datasets: list[str | None]
    gate: str | None = None
    gate_overrides: list[str] = []

    @property
    def test_sets(self) -> list[str]:
        """The datasets given (an unset ``${vars.previous}`` leaves an empty entry: dropped)."""
        return [d for d in self.datasets if d]


class PromoteOptions(ConfigModel):
    """Apply the gate to the registered version of ``run`` against the champion."""

    registry: str
    run: str
    gate: str | None = None
    gate_overrides: list[str] = []
    data: str | None = None


def _champion_run(registry: str, exclude: Path | None = None) -> tuple[Path | None, str | None]:
    from ecgka.release.registry import ModelRegistry

    reg = ModelRegistry(registry)
    name = reg.aliases().get("champion")
    if name is None:
        return None, None
    run = Path(reg.record(name)["run"]["path"])
    return (None, None) if exclude is not None and run == exclude.resolve() else (run, name)


def _run_challenger(o: ChallengerOptions, out: Path) -> None:
    from ecgka.training import train_run

    init = _champion_run(o.registry, exclude=out)[0] if o.init == "champion" else None
    train_run(_train_config(o.train_options()), Path(o.data), out, init=init)


def _run_register(o: RegisterOptions, out: Path) -> None:
    from ecgka.release.registry import ModelRegistry

    ModelRegistry(o.registry).register(o.run, o.checkpoint, o.note)


def _register_complete(o: RegisterOptions, out: Path) -> bool:
    from ecgka.release.registry import ModelRegistry, file_sha256

    weights = RunDir(o.run).checkpoint(o.checkpoint)
    return weights.is_file() and ModelRegistry(o.registry).find_run(Path(o.run), file_sha256(weights)) is not None


def _gate(path: str | None, overrides: list[str]) -> Any:
    from ecgka.release.gate import load_gate

    return load_gate(path, overrides)


def _run_compare(o: CompareOptions, out: Path) -> None:
    from ecgka.release.compare import write_comparison
    from ecgka.release.registry import ModelRegistry

    champion, name = _champion_run(o.registry, exclude=Path(o.challenger))
    version = ModelRegistry(o.registry).find_version_of(Path(o.challenger))
    write_comparison(o.challenger, o.test_sets, out, champion, _gate(o.gate, o.gate_overrides), names=(name, version))


def _run_promote(o: PromoteOptions, out: Path) -> None:
    from ecgka.io import atomic_write_json
    from ecgka.release.promote import promote
    from ecgka.release.registry import ModelRegistry

    version = ModelRegistry(o.registry).find_version_of(Path(o.run))
    if version is None:
        raise InputError(f"{o.run}: not registered in {o.registry} (a register stage comes before the gate)")
    claim = claim_folder(out, FolderKind.COMPARISON)
    decision = promote(o.registry, version, _gate(o.gate, o.gate_overrides), o.data)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ComparisonDir(out).gate, decision)
    claim.write_marker(version)


STAGE_KINDS.register("challenger")(
    StageKind(ChallengerOptions, _run_challenger, lambda o, out: _train_complete(o, out),
              input_options=("config", "data"), reset=_remove,
              resolved_config=lambda o: {"train": _train_config(o.train_options()).model_dump(mode="json"),
                                         "init": o.init})
)
STAGE_KINDS.register("register")(
    StageKind(RegisterOptions, _run_register, _register_complete, input_options=("run",),
              output_of=lambda o, default: Path(o.registry))
)
STAGE_KINDS.register("compare")(
    StageKind(CompareOptions, _run_compare, lambda o, out: ComparisonDir(out).json.is_file(),
              input_options=("challenger", "datasets"), reset=_remove,
              resolved_config=lambda o: _gate(o.gate, o.gate_overrides).model_dump(mode="json"))
)
STAGE_KINDS.register("promote")(
    StageKind(PromoteOptions, _run_promote, lambda o, out: ComparisonDir(out).gate.is_file(),
              input_options=("run",), reset=_remove,
              resolved_config=lambda o: _gate(o.gate, o.gate_overrides).model_dump(mode="json"))
)
