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
from typing import Any

from pydantic import BaseModel

from ecgka.catalog import DatasetDir, ReportDir, RunDir
from ecgka.config import ConfigModel
from ecgka.errors import InputError
from ecgka.registry import Registry


class SynthOptions(ConfigModel):
    subjects: int = 300
    seed: int = 0
    workers: int | None = None


class BuildOptions(ConfigModel):
    ecg_root: str
    labs: list[str]
    d_labitems: str | None = None
    config: str | None = None
    overrides: list[str] = []
    workers: int | None = None
    dask_scheduler: str | None = None


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


STAGE_KINDS: Registry[StageKind] = Registry("stage kind")


def _run_synth(o: SynthOptions, out: Path) -> None:
    from ecgka.standin import generate_standin

    if out.exists():  # a stand-in is written atomically: a leftover without a marker is redone
        shutil.rmtree(out)
    generate_standin(out, subjects=o.subjects, seed=o.seed, workers=o.workers)


def _build_config(o: BuildOptions) -> Any:
    from ecgka.config import load_config
    from ecgka.data.config import BuildConfig

    return load_config(BuildConfig, o.config, o.overrides, override_source="overrides")


def _run_build(o: BuildOptions, out: Path) -> None:
    from ecgka.data.build import build_dataset

    build_dataset(Path(o.ecg_root), [Path(p) for p in o.labs], out, _build_config(o),
                  workers=o.workers, dask_scheduler=o.dask_scheduler, d_labitems=o.d_labitems, progress=True)


def _train_config(o: TrainOptions) -> Any:
    from ecgka.training import load_train_config

    return load_train_config(o.config, o.overrides)


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
STAGE_KINDS.register("build")(
    StageKind(BuildOptions, _run_build, _build_complete, file_options=("labs", "d_labitems"),
              input_options=("ecg_root", "labs", "d_labitems", "config"), reset=_remove,
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
