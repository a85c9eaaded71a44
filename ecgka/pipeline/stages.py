"""Stage kinds of a pipeline: how each kind's options are typed, where its output lives, how it runs.

A stage kind's options are its command's options model (``ecgka/cli/options.py``, the one home of every
default), less where the output goes, which the pipeline decides; it runs through the same ``execute`` as
the command, so a stage and the command call the same API function and produce identical outputs. Stage
APIs are imported lazily (no torch import to run a synth stage). Whether a stage's output is complete is
read through the catalog (``ecgka.catalog``), which alone knows the file names of the folders.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ecgka.catalog import ComparisonDir, DatasetDir, ReportDir, RunDir
from ecgka.cli.options import (
    AgeSynthOptions,
    BuildOptions,
    ChallengerOptions,
    CompareOptions,
    EvaluateOptions,
    PromoteOptions,
    RegisterOptions,
    ReportOptions,
    SynthOptions,
    TrainOptions,
)
from ecgka.errors import InputError
from ecgka.io import LOCK_FILE
from ecgka.names import NameTable

SynthAgeOptions = AgeSynthOptions  # the ``synth_age`` stage's options (``ecgka age synth``)

@dataclass(frozen=True)
class StageKind:
    """A kind of stage: its typed options, its output location, its runner and its completeness test."""

    options_model: type[BaseModel]
    run: Callable[[Any, Path], None]
    is_complete: Callable[[Any, Path], bool]
    output_of: Callable[[Any, Path], Path] = lambda options, default: default
    # option names whose values are paths: the fingerprint identifies each by its resolved location (relative
    # to the pipeline folder when inside it), a file also by its content (size and time when large), never by
    # how it was spelled; ``${stage}`` references anywhere are identified relative to the pipeline folder
    path_options: tuple[str, ...] = ()
    # path options whose files are configs: the fingerprint holds their content only, not where they are
    config_options: tuple[str, ...] = ()
    # option names that name paths which must exist before the job starts, unless the value is an
    # earlier stage's output (a ``${stage}`` reference), which is made by the job itself
    input_options: tuple[str, ...] = ()
    # the fully resolved config of the stage (defaults, ``extends`` and overrides applied), fingerprinted
    resolved_config: Callable[[Any], dict[str, Any]] = lambda options: {}
    # the stage's options as its fingerprint sees them: settings that change no result left out (the MLflow
    # mirror's ``mlflow.*`` overrides), so turning the mirror on or off re-runs nothing
    fingerprinted: Callable[[dict[str, Any]], dict[str, Any]] = lambda options: options
    # called before re-running a stage whose inputs or config changed (or with --force); stages that
    # resume by themselves must not resume work made from other inputs
    reset: Callable[[Path], None] = lambda out: None
    # checks of the resolved options that ``ecgka run --check`` makes before anything runs (a registry
    # path that is a run or dataset folder, a ``previous`` that is no dataset): raise a one-line error
    check: Callable[[Any], None] = lambda options: None
    # the folder the runner locks while the stage runs (``ecgka.locks``): its output folder, the run folder
    # an evaluation writes into; None when the stage's API locks what it writes itself (the registry)
    lock_of: Callable[[Any, Path], Path | None] = lambda options, output: output
    # the stage's key result, printed when it ends (a run's best val epoch, a dataset's counts, ...)
    result: Callable[[Any, Path], str | None] = lambda options, output: None
    # the stage wants a GPU: on a cluster whose workers advertise one (``--resources GPU=1``), it runs on a
    # worker with a free GPU, one such stage per GPU (``ecgka.pipeline.parallel``)
    gpu: bool = False


def _remove(out: Path) -> None:
    """Empty a stage's output folder, all but its write lock (held by the runner while the stage runs)."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


STAGE_KINDS: NameTable[StageKind] = NameTable("stage kind")


def _run_synth(o: SynthOptions, out: Path) -> None:
    _remove(out)  # a stand-in is written atomically: a leftover without a marker is redone
    o.execute(out)


def _run_synth_age(o: AgeSynthOptions, out: Path) -> None:
    _remove(out)  # written atomically: a leftover without a marker is redone
    o.execute(out)


def _synth_age_complete(o: AgeSynthOptions, out: Path) -> bool:
    from ecgka.age.standin import CSV_NAME

    return (out / CSV_NAME).is_file()


def _run_build(o: BuildOptions, out: Path) -> None:
    o.execute(out, cfg=o.load_config("overrides"), progress=True)


def _without_mirror(options: dict[str, Any]) -> dict[str, Any]:
    """A training stage's options less its ``mlflow.*`` overrides (the mirror changes no result); an
    ``overrides`` list left empty is left out, as it was before a pipeline's ``mlflow:`` block added to it."""
    overrides = options.get("overrides")
    if not isinstance(overrides, list):
        return options
    kept = [o for o in overrides if not (isinstance(o, str) and o.strip().startswith("mlflow."))]
    if len(kept) == len(overrides):
        return options
    return {k: v for k, v in options.items() if k != "overrides"} | ({"overrides": kept} if kept else {})


def _train_config(o: Any) -> dict[str, Any]:
    """The resolved training config, fingerprinted without the MLflow mirror's settings."""
    return o.load_config("overrides").model_dump(mode="json", exclude={"mlflow"})


def _run_train(o: TrainOptions, out: Path) -> None:
    o.execute(out, cfg=o.load_config("overrides"))


def _evaluate_config(o: EvaluateOptions) -> dict[str, Any]:
    """The evaluation config when the stage sets one (a stage without stays fingerprinted as before)."""
    return o.load_config("overrides").model_dump(mode="json") if o.config or o.overrides else {}


def _run_evaluate(o: EvaluateOptions, out: Path) -> None:
    o.execute(cfg=o.load_config("overrides"))


def _run_report(o: ReportOptions, out: Path) -> None:
    o.execute(out)


def _synth_complete(o: SynthOptions, out: Path) -> bool:
    from ecgka.standin import standin_complete

    return standin_complete(out)


def _build_complete(o: BuildOptions, out: Path) -> bool:
    dataset = DatasetDir(out)
    return dataset.manifest_or_none() is not None and dataset.exclusions_path.is_file()


def _train_complete(o: Any, out: Path) -> bool:
    run = RunDir(out)
    try:
        return run.read_run().get("status") == "complete"
    except InputError:  # no run.json yet (or an unreadable one): the stage runs and resumes
        return False


def _evaluate_complete(o: EvaluateOptions, out: Path) -> bool:
    return RunDir(o.run).metrics_path(o.split).is_file()


def _report_complete(o: ReportOptions, out: Path) -> bool:
    return ReportDir(out).html.is_file()


def _build_result(o: BuildOptions, out: Path) -> str:
    counts = DatasetDir(out).read_manifest().get("counts") or {}
    splits = ", ".join(f"{name} {counts[name]}" for name in ("train", "val", "test", "excluded") if name in counts)
    return f"{splits} (of {counts['record_list']} records)" if "record_list" in counts else splits


def _train_result(o: Any, out: Path) -> str:
    run = RunDir(out).read_run()
    best, value = run.get("best_epoch"), run.get("best_value")
    if best is None or value is None:
        return f"no best epoch in {run.get('epochs_done')} epoch(s)"
    return f"best epoch {best}/{run.get('epochs_done')}: val {run.get('selection_metric')} {value:.4f}"


def _evaluate_result(o: EvaluateOptions, out: Path) -> str:
    metrics = RunDir(o.run).read_metrics(o.split)
    regression = metrics.get("regression") or {}
    few, everyone = regression.get("few") or {}, regression.get("all") or {}
    parts = [f"few-shot MAE {few['mae']:.4f} (n={few.get('n')})"] if few.get("mae") is not None else []
    parts += [f"MAE {everyone['mae']:.4f} (n={everyone.get('n')})"] if everyone.get("mae") is not None else []
    return f"{o.split}: " + (", ".join(parts) or "no regression metrics")


def _report_result(o: ReportOptions, out: Path) -> str:
    return f"report: {ReportDir(out).html}"


def _check_build(o: BuildOptions) -> None:
    if o.previous and Path(o.previous).exists():  # made by an earlier stage: not there yet
        DatasetDir(o.previous).read_manifest()  # a run folder, a registry or an old layout: one line


STAGE_KINDS.register("synth")(StageKind(SynthOptions, _run_synth, _synth_complete))
STAGE_KINDS.register("synth_age")(StageKind(AgeSynthOptions, _run_synth_age, _synth_age_complete))
STAGE_KINDS.register("build")(
    StageKind(BuildOptions, _run_build, _build_complete,
              path_options=("ecg_root", "labs", "d_labitems", "config", "previous"), config_options=("config",),
              input_options=("ecg_root", "labs", "d_labitems", "config", "previous"), reset=_remove,
              check=_check_build, result=_build_result,
              resolved_config=lambda o: o.load_config("overrides").model_dump(mode="json"))
)
STAGE_KINDS.register("train")(
    StageKind(TrainOptions, _run_train, _train_complete, input_options=("config", "data", "init"),
              path_options=("config", "data", "init"), config_options=("config",), result=_train_result, gpu=True,
              resolved_config=_train_config, fingerprinted=_without_mirror, reset=_remove)
)
STAGE_KINDS.register("evaluate")(
    StageKind(EvaluateOptions, _run_evaluate, _evaluate_complete, input_options=("run", "data", "config"),
              path_options=("run", "data", "config"), config_options=("config",), result=_evaluate_result,
              output_of=lambda o, default: RunDir(o.run).eval_dir(o.split), resolved_config=_evaluate_config, gpu=True,
              lock_of=lambda o, output: Path(o.run))  # it writes into RUN/eval: the run folder is locked
)
STAGE_KINDS.register("report")(
    StageKind(ReportOptions, _run_report, _report_complete, input_options=("runs",), path_options=("runs",),
              reset=_remove, result=_report_result)
)


# ---- retraining: the challenger, the registry, the comparison and the gate (docs/retraining.md) ----------


def _run_challenger(o: ChallengerOptions, out: Path) -> None:
    o.execute(out, cfg=o.train_options().load_config("overrides"))


def _run_register(o: RegisterOptions, out: Path) -> None:
    o.execute()


def _register_complete(o: RegisterOptions, out: Path) -> bool:
    from ecgka.io import sha256_file
    from ecgka.release.registry import ModelRegistry

    weights = RunDir(o.run).checkpoint(o.checkpoint)
    return weights.is_file() and ModelRegistry(o.registry).find_run(Path(o.run), sha256_file(weights)) is not None


def _gate(path: str | None) -> Any:
    from ecgka.release.gate import load_gate

    return load_gate(path)


def _run_compare(o: CompareOptions, out: Path) -> None:
    o.execute(out)


def _run_promote(o: PromoteOptions, out: Path) -> None:
    from ecgka.cli.registry import format_decision

    print(format_decision(o.execute(out)))  # the gate's decision: promoted, or refused with the failed rules


def _check_registry(o: Any) -> None:
    from ecgka.cli.options import check_registry_path

    check_registry_path(o.registry)


def _check_challenger(o: ChallengerOptions) -> None:
    o.champion()  # the registry path, and a missing champion without new_registry, refused before training


STAGE_KINDS.register("challenger")(
    StageKind(ChallengerOptions, _run_challenger, lambda o, out: _train_complete(o, out),
              input_options=("config", "data"), reset=_remove, check=_check_challenger,
              path_options=("config", "data", "registry"), config_options=("config",), result=_train_result, gpu=True,
              resolved_config=lambda o: {"train": _train_config(o.train_options()), "init": o.init},
              fingerprinted=_without_mirror)
)
STAGE_KINDS.register("register")(
    StageKind(RegisterOptions, _run_register, _register_complete, input_options=("run",),
              path_options=("registry", "run"), lock_of=lambda o, output: None,  # the registry locks itself
              output_of=lambda o, default: Path(o.registry), check=_check_registry)
)
STAGE_KINDS.register("compare")(
    StageKind(CompareOptions, _run_compare, lambda o, out: ComparisonDir(out).json.is_file(),
              input_options=("challenger", "datasets"), reset=_remove, check=_check_registry,
              path_options=("registry", "challenger", "datasets", "gate"), config_options=("gate",), gpu=True,
              resolved_config=lambda o: _gate(o.gate).model_dump(mode="json"))
)
STAGE_KINDS.register("promote")(
    StageKind(PromoteOptions, _run_promote, lambda o, out: ComparisonDir(out).gate.is_file(),
              input_options=("run",), reset=_remove, check=_check_registry,
              path_options=("registry", "run", "gate", "data"), config_options=("gate",),
              resolved_config=lambda o: _gate(o.gate).model_dump(mode="json"))
)
