"""Stage kinds of a pipeline: how each kind's options are typed, where its output lives, how it runs.

Each kind calls the same Python entry point as its CLI command, so a pipeline stage and the command
produce identical outputs. Stage APIs are imported lazily (no torch import to run a synth stage).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ecgka.config import ConfigModel
from ecgka.registry import Registry


class SynthOptions(ConfigModel):
    subjects: int = 300
    seed: int = 0
    workers: int | None = None


class BuildOptions(ConfigModel):
    ecg_root: str
    labs: list[str]
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
    # option names whose values are config files or external inputs (their content joins the fingerprint)
    file_options: tuple[str, ...] = ()


STAGE_KINDS: Registry[StageKind] = Registry("stage kind")


def _run_synth(o: SynthOptions, out: Path) -> None:
    from ecgka.data.synth import generate_standin

    if out.exists():  # a stand-in is written atomically: a leftover without a marker is redone
        shutil.rmtree(out)
    generate_standin(out, subjects=o.subjects, seed=o.seed, workers=o.workers)


def _run_build(o: BuildOptions, out: Path) -> None:
    from ecgka.config import load_config
    from ecgka.data.build import build_dataset
    from ecgka.data.config import BuildConfig

    cfg = load_config(BuildConfig, o.config, o.overrides)
    build_dataset(Path(o.ecg_root), [Path(p) for p in o.labs], out, cfg,
                  workers=o.workers, dask_scheduler=o.dask_scheduler)


def _run_train(o: TrainOptions, out: Path) -> None:
    from ecgka.config import load_config
    from ecgka.training import TrainConfig, train_run

    cfg = load_config(TrainConfig, o.config, o.overrides)
    train_run(cfg, Path(o.data), out, init=Path(o.init) if o.init else None)


def _run_evaluate(o: EvaluateOptions, out: Path) -> None:
    from ecgka.evaluation import evaluate_run

    evaluate_run(Path(o.run), Path(o.data), split=o.split)


def _run_report(o: ReportOptions, out: Path) -> None:
    from ecgka.report import write_report

    write_report([Path(r) for r in o.runs], out, title=o.title)


def _has(*names: str) -> Callable[[Any, Path], bool]:
    return lambda options, out: all((out / n).exists() for n in names)


def _train_complete(o: TrainOptions, out: Path) -> bool:
    import json

    run_json = out / "run.json"
    return run_json.exists() and json.loads(run_json.read_text()).get("status") == "complete"


STAGE_KINDS.register("synth")(StageKind(SynthOptions, _run_synth, _has("ecg/record_list.csv")))
STAGE_KINDS.register("build")(
    StageKind(BuildOptions, _run_build, _has("manifest.json", "exclusions.parquet"),
              file_options=("config", "labs"))
)
STAGE_KINDS.register("train")(StageKind(TrainOptions, _run_train, _train_complete, file_options=("config",)))
STAGE_KINDS.register("evaluate")(
    StageKind(
        EvaluateOptions,
        _run_evaluate,
        lambda o, out: (Path(o.run) / "eval" / o.split / "metrics.json").exists(),
        output_of=lambda o, default: Path(o.run) / "eval" / o.split,
    )
)
STAGE_KINDS.register("report")(StageKind(ReportOptions, _run_report, _has("report.html")))
