"""One options model per command: the one home of each option's default, type and help text.

A command's model is read three ways: ``ecgka COMMAND`` generates its argparse parser from it
(:func:`add_options`), a pipeline stage of the same kind validates its YAML keys with it, and both call the
same API function through it (the model's ``execute``). Where a command writes a folder, its model
(``SynthOptions``) holds what a stage may set, and the command's model (``SynthCommand``) adds only where
the output goes (``--out``, ``--force``, ``--quiet``), which the pipeline decides for a stage.

Light on purpose (pydantic only): every API is imported inside ``execute``, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import Field
from pydantic.fields import FieldInfo

from ecgka.config import ConfigModel, validate_config
from ecgka.errors import ConfigError
from ecgka.keys import SPLITS

Checkpoint = Literal["best", "last"]


def option(default: Any = ..., help: str = "", *, flag: str | None = None, positional: bool = False,
           nargs: str | None = None, metavar: str | None = None, append: bool = False, group: str | None = None,
           shown_default: str | None = None, **bounds: Any) -> Any:
    """A field with its command-line spelling: ``--flag-name`` (or ``flag``), a positional, an appended list.

    ``shown_default``: how ``--help`` shows a None default (``all cores``); other defaults are shown as is.
    ``bounds``: pydantic's ``ge``/``le``..., checked with the options (``ecgka run --check`` too).
    """
    cli = {"flag": flag, "positional": positional, "nargs": nargs, "metavar": metavar, "append": append,
           "group": group, "shown_default": shown_default}
    return Field(default, description=help, json_schema_extra={"cli": cli}, **bounds)


class CommandOptions(ConfigModel):
    """Base of the options models: ``api`` names the API function (``module:function``) the command calls;
    ``api_names`` maps an option to that function's parameter when their names differ."""

    api: ClassVar[str | None] = None
    api_names: ClassVar[dict[str, str]] = {}
    # the option naming the folder the command writes, and what that folder is: ``ecgka COMMAND`` holds the
    # folder's lock for the whole command (``ecgka.cli``, ``ecgka.locks``): a second writer gets one line
    # naming the holder and exit 75. None: the command writes no folder, or its API locks it itself
    writes: ClassVar[str | None] = None
    writes_what: ClassVar[str] = "folder"


# ---- the command line generated from a model ------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (``ecgka age pack: error: unrecognized arguments: --note x``), exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int(text: str) -> int:
    """Parse an integer; range checks happen in the API functions so the messages are in one place."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _scalar(annotation: Any) -> tuple[Callable[[str], Any] | None, list[str] | None]:
    """(argparse type, choices) of a field's annotation (``int | None`` -> int, ``Literal[...]`` -> choices)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if typing.get_origin(annotation) is Literal:
        return None, [str(a) for a in typing.get_args(annotation)]
    inner = args[0]
    if typing.get_origin(inner) is Literal:
        return None, [str(a) for a in typing.get_args(inner)]
    return {int: _int, float: _float}.get(inner), None


def cli_info(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return dict(extra.get("cli") or {})


def flag_of(name: str, field: FieldInfo) -> str:
    """The option's spelling on the command line: ``--ecg-root``, or the positional's metavar."""
    info = cli_info(field)
    if info.get("positional"):
        return info.get("metavar") or name.upper()
    return info.get("flag") or "--" + name.replace("_", "-")


def _help(field: FieldInfo) -> str:
    text = field.description or ""
    info = cli_info(field)
    if field.is_required() or info.get("positional") and info.get("nargs"):
        return text
    default = field.get_default(call_default_factory=True)
    if default is None:
        shown = info.get("shown_default")
    elif default is False or default == []:
        shown = None
    else:
        shown = str(default)
    return f"{text} (default: {shown})" if shown else text


def add_options(parser: argparse.ArgumentParser, model: type[ConfigModel]) -> None:
    """Positionals and flags of ``model``'s fields, in field order (the field name is argparse's dest)."""
    groups: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        info = cli_info(field)
        target = parser
        if info.get("group"):
            if info["group"] not in groups:
                groups[info["group"]] = parser.add_mutually_exclusive_group()
            target = groups[info["group"]]
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        kwargs: dict[str, Any] = {"help": _help(field)}
        kind, choices = _scalar(field.annotation)
        if choices:
            kwargs["choices"] = choices
        if info.get("positional"):
            target.add_argument(name, metavar=info.get("metavar") or name.upper(), nargs=info.get("nargs"),
                                **({"default": default} if info.get("nargs") in ("?", "*") else {}),
                                **({"type": kind} if kind and not info.get("nargs") else {}), **kwargs)
            continue
        if field.annotation is bool:
            target.add_argument(flag_of(name, field), dest=name, action="store_true", **kwargs)
            continue
        if info.get("append"):
            kwargs.update(action="append", nargs=info.get("nargs"))
        elif info.get("nargs"):
            kwargs["nargs"] = info["nargs"]
        elif kind:
            kwargs["type"] = kind
        target.add_argument(flag_of(name, field), dest=name, metavar=info.get("metavar"),
                            required=field.is_required(), default=None if info.get("append") else default,
                            **kwargs)


def options_from_args(model: type[ConfigModel], args: argparse.Namespace) -> Any:
    """The typed options of a parsed command line (an appended flag not given takes the model's default)."""
    values = {name: getattr(args, name) for name in model.model_fields}
    values = {k: v for k, v in values.items() if v is not None or not cli_info(model.model_fields[k]).get("append")}
    try:
        return validate_config(model, values, source="command line")
    except ConfigError as exc:  # name the option as typed: "--subjects", not "subjects"
        text = str(exc)
        for name, field in model.model_fields.items():
            if text.startswith(f"command line: {name}: ") and not cli_info(field).get("positional"):
                raise ConfigError(f"command line: {flag_of(name, field)}: {text[len(name) + 16:]}") from None
        raise


class Command(NamedTuple):
    """What a command runs: its options model and ``run(options) -> exit code``."""

    options: type[ConfigModel]
    run: Callable[[Any], int]


# ---- synth: the MIMIC-IV stand-in --------------------------------------------------------------------------------


class SynthOptions(CommandOptions):
    """``ecgka synth`` and the ``synth`` stage."""

    api: ClassVar[str] = "ecgka.standin:generate_standin"
    api_names: ClassVar[dict[str, str]] = {"out": "out_dir"}

    subjects: int = option(200, "subjects in the lab tables, ~92%% of them with ECGs", metavar="N", ge=1,
                           le=1_000_000)
    seed: int = option(0, "random seed; same seed, same bytes", metavar="S", ge=0)
    workers: int | None = option(None, "worker processes", metavar="W", shown_default="all cores", ge=1, le=256)

    def execute(self, out: str | Path, *, force: bool = False, progress: Any = None) -> dict:
        from ecgka.standin import generate_standin

        return generate_standin(out, subjects=self.subjects, seed=self.seed, workers=self.workers,
                                progress=progress, force=force)


class SynthCommand(SynthOptions):
    writes: ClassVar[str] = "out"
    writes_what: ClassVar[str] = "stand-in folder"

    out: str = option(..., "output folder (must not exist or be empty)", metavar="DIR")
    force: bool = option(False, "replace a stand-in folder written by ecgka synth")


# ---- build ---------------------------------------------------------------------------------------------------------


class BuildOptions(CommandOptions):
    """``ecgka build`` and the ``build`` stage."""

    api: ClassVar[str] = "ecgka.data.build:build_dataset"
    api_names: ClassVar[dict[str, str]] = {"labs": "lab_files", "out": "out_dir"}

    ecg_root: str = option(..., "MIMIC-IV-ECG root (holds record_list.csv and files/)", metavar="DIR")
    labs: list[str] = option(..., "lab export (.csv, .csv.gz or .parquet): labevents columns (full or incremental) "
                             "or a simple table subject_id, charttime, potassium[, itemid] (labs.format); "
                             "repeatable", metavar="FILE", append=True)
    previous: str | None = option(None, "a dataset version to extend: its labs join --labs, its ECGs are reused, its "
                                  "subjects keep their splits (docs/retraining.md)", metavar="DATASET_DIR")
    d_labitems: str | None = option(None, "optional d_labitems table: potassium items by label+fluid", metavar="FILE")
    patients: str | None = option(None, "optional hosp/patients table: sex and age subgroups (docs/build.md)",
                                  metavar="FILE", shown_default="patients.csv.gz beside the first --labs, if any")
    transfers: str | None = option(None, "optional hosp/transfers table: care-setting subgroups (docs/build.md)",
                                   metavar="FILE", shown_default="transfers.csv.gz beside the first --labs, if any")
    config: str | None = option(None, "build config YAML", metavar="FILE",
                                shown_default="built-in defaults = configs/data/ecg_ka_dir.yaml")
    overrides: list[str] = option([], "config overrides, e.g. signal.leads=[I,II]", positional=True, nargs="*",
                                  metavar="key=value")
    workers: int | None = option(None, "local worker processes for the signal stage", metavar="N", group="where",
                                 shown_default="all cores", ge=1)
    dask_scheduler: str | None = option(None, "run the signal stage on a Dask cluster", metavar="ADDRESS",
                                        group="where")

    def load_config(self, override_source: str = "command line") -> Any:
        from ecgka.config import load_config
        from ecgka.data.config import BuildConfig
        from ecgka.resources import find_config

        path = find_config(self.config, "data") if self.config else None  # a file or a shipped name
        return load_config(BuildConfig, path, self.overrides, override_source=override_source)

    def execute(self, out: str | Path, *, cfg: Any = None, force: bool = False, progress: bool = True,
                log: Any = None) -> dict:
        from ecgka.data.build import build_dataset

        return build_dataset(self.ecg_root, self.labs, out, cfg if cfg is not None else self.load_config(),
                             workers=self.workers, dask_scheduler=self.dask_scheduler, d_labitems=self.d_labitems,
                             progress=progress, force=force, log=log, previous=self.previous,
                             patients=self.patients, transfers=self.transfers)


class BuildCommand(BuildOptions):
    writes: ClassVar[str] = "out"
    writes_what: ClassVar[str] = "dataset folder"

    out: str = option(..., "dataset directory to write: new, empty, or a dataset folder (same inputs: resumed "
                      "or skipped)", metavar="DIR")
    force: bool = option(False, "replace a complete dataset in --out that was built from other inputs or config")
    quiet: bool = option(False, "no progress bars")


# ---- train -----------------------------------------------------------------------------------------------------------


class TrainOptions(CommandOptions):
    """``ecgka train`` and the ``train`` stage."""

    api: ClassVar[str] = "ecgka.training.api:train_run"
    api_names: ClassVar[dict[str, str]] = {"data": "data_dir", "out": "run_dir"}

    config: str | None = option(None, "training config: a YAML file, or a shipped config's name (vanilla, "
                                "age/dist_loss: `ecgka configs` lists them)", metavar="FILE_OR_NAME",
                                shown_default="built-in defaults")
    data: str = option(..., "dataset: a directory from `ecgka build`, an age split CSV (age,path,split; images "
                       "under data.image.root, default its folder) or an `ecgka age pack` folder", metavar="DIR")
    init: str | None = option(None, "stage 2: a stage-1 run directory or checkpoint (sets init.path)",
                              metavar="RUN_OR_CKPT")
    overrides: list[str] = option([], "config overrides, e.g. epochs=3 method.name=lds model.preset=small",
                                  positional=True, nargs="*", metavar="key=value")

    def load_config(self, override_source: str = "command line") -> Any:
        from ecgka.training import load_train_config

        return load_train_config(self.config, self.overrides, override_source=override_source)

    def execute(self, out: str | Path, *, cfg: Any = None, init: str | Path | None = None, force: bool = False,
                log: Any = None) -> dict:
        from ecgka.training.api import train_run

        return train_run(cfg if cfg is not None else self.load_config(), self.data, out,
                         init=init if init is not None else self.init, force=force, log=log)


class TrainCommand(TrainOptions):
    writes: ClassVar[str] = "out"
    writes_what: ClassVar[str] = "run folder"

    out: str = option(..., "run directory: new, or continued/extended when it holds this config's run",
                      metavar="RUN_DIR")
    force: bool = option(False, "start over a complete or resumable run of another config in --out")


# ---- evaluate ----------------------------------------------------------------------------------------------------------


class EvaluateOptions(CommandOptions):
    """``ecgka evaluate`` and the ``evaluate`` stage."""

    api: ClassVar[str] = "ecgka.evaluation.evaluate:evaluate_run"
    api_names: ClassVar[dict[str, str]] = {"run": "run_dir", "data": "data_dir"}

    run: str = option(..., "a run directory written by `ecgka train`", positional=True, metavar="RUN_DIR")
    data: str = option(..., "the dataset: a directory of `ecgka build`, an age split CSV or an `ecgka age pack` "
                       "folder", metavar="DIR")
    split: Literal[SPLITS] = option("test", "split to evaluate (operating points are fixed on val)")
    config: str | None = option(None, "YAML with evaluation options (EvalConfig)", metavar="FILE")
    overrides: list[str] = option([], "e.g. n_boot=2000 target_sensitivity=0.95 checkpoint=last device=cpu "
                                  "many=0.4 (shot cut-offs default to the dataset manifest's)", positional=True,
                                  nargs="*", metavar="key=value")

    def load_config(self, override_source: str = "command line") -> Any:
        from ecgka.config import load_config
        from ecgka.evaluation.config import EvalConfig

        return load_config(EvalConfig, self.config, self.overrides, override_source=override_source)

    def execute(self, *, cfg: Any = None, allow_other_dataset: bool = False) -> dict:
        from ecgka.evaluation.evaluate import evaluate_run

        return evaluate_run(self.run, self.data, self.split, cfg if cfg is not None else self.load_config(),
                            allow_other_dataset=allow_other_dataset)


class EvaluateCommand(EvaluateOptions):
    writes: ClassVar[str] = "run"  # it writes RUN/eval/: the run folder is locked (not while it trains)
    writes_what: ClassVar[str] = "run folder"

    allow_other_dataset: bool = option(False, "evaluate on a dataset the run was not trained on; written to "
                                       "RUN/eval/<fingerprint>/ (the run's own eval/ stays as it is)")


# ---- report ---------------------------------------------------------------------------------------------------------------


class ReportOptions(CommandOptions):
    """``ecgka report`` and the ``report`` stage."""

    api: ClassVar[str] = "ecgka.report.build:write_report"
    api_names: ClassVar[dict[str, str]] = {"runs": "run_dirs", "out": "out_dir"}

    runs: list[str] = option(..., "evaluated run directories, or one comparison folder (compare stage); with "
                             "--compare: CHAMPION CHALLENGER (run folders or REGISTRY@alias)", positional=True,
                             nargs="+", metavar="RUN_DIR")
    split: Literal["val", "test"] = option("test", "evaluated split to report")
    dataset: str | None = option(None, "report the runs' evaluations on another dataset (`ecgka evaluate "
                                 "--allow-other-dataset`, RUN/eval/FINGERPRINT/) instead of their own",
                                 metavar="FINGERPRINT")
    group_by_dataset: bool = option(False, "runs evaluated on different datasets: one report per dataset "
                                    "(DIR/datasets/FP/) under an index page, never compared across datasets "
                                    "(default: refused)")
    title: str | None = option(None, "the report's title", metavar="TEXT",
                               shown_default="ECG potassium regression: evaluation report")
    reevaluate: bool = option(False, "evaluate again (on the run's own dataset, same options) a run whose "
                              "checkpoint changed after its evaluation (default: refused)")
    compare: bool = option(False, "champion vs challenger: two runs evaluated on the same samples side by side, "
                           "each metric's delta (challenger - champion) with its paired subject-bootstrap "
                           "confidence interval")
    gate: str | None = option(None, "with --compare: apply this gate file and show each rule's values (default: "
                              "no gate applied)", metavar="FILE")
    n_boot: int = option(1000, "with --compare: bootstrap replicates of the paired CIs", ge=200)
    seed: int = option(0, "with --compare: seed of the paired bootstrap")

    def execute(self, out: str | Path, *, force: bool = False, log: Any = None) -> Path:
        from ecgka.report import write_report

        runs, gate = self.runs, None
        if self.gate and not self.compare:
            raise ConfigError("--gate applies to a champion vs challenger report: `ecgka report CHAMPION_RUN "
                              "CHALLENGER_RUN --compare --gate FILE --out DIR`")
        if self.compare:  # registry references and the gate live in the release layer, above the report's
            from ecgka.release.gate import apply_gate, load_gate
            from ecgka.release.registry import parse_ref, resolve_model

            runs = [str(resolve_model(r)[0]) if parse_ref(r) else r for r in runs]
            if self.gate:
                cfg = load_gate(self.gate)
                gate = lambda base, cand, paired: apply_gate(cfg, base, cand, paired)  # noqa: E731
        return write_report(runs, out, split=self.split, title=self.title, force=force, dataset=self.dataset,
                            group_by_dataset=self.group_by_dataset, reevaluate=self.reevaluate, compare=self.compare,
                            gate=gate, n_boot=self.n_boot, seed=self.seed, log=log)


class ReportCommand(ReportOptions):
    writes: ClassVar[str] = "out"
    writes_what: ClassVar[str] = "report folder"

    out: str = option(..., "report directory: new, empty, or a report folder (regenerated as a whole)",
                      metavar="DIR")
    force: bool = option(False, "replace a report folder that reports other runs")


# ---- run, lineage, export, predict ------------------------------------------------------------------------------------


class RunOptions(CommandOptions):
    """``ecgka run`` (a pipeline is no stage of a pipeline)."""

    pipeline: str | None = option(None, "pipeline file, or the name of a shipped pipeline (retrain, "
                                  "pipelines/demo.yaml: from any folder)", positional=True, nargs="?",
                                  metavar="PIPELINE")
    out: str | None = option(None, "output folder", metavar="DIR", shown_default="outputs/NAME")
    variables: list[list[str]] = option([], "pipeline variables declared under 'vars:', e.g. --set ecg_root=DIR "
                                        "labs=FILE (repeatable; may come before or after the pipeline file)",
                                        flag="--set", nargs="+", append=True, metavar="NAME=VALUE")
    only: list[str] | None = option(None, "run only these stages", nargs="*", metavar="STAGE")
    force: bool = option(False, "re-run stages even when complete")
    list_stages: bool = option(False, "list the stages and exit (without a pipeline: the shipped pipelines)",
                               flag="--list")
    check: bool = option(False, "resolve and validate every stage and config without running anything")
    parallel: int | None = option(None, "run independent stages at once on a local Dask cluster of N worker "
                                  "processes (with GPUs: one per GPU, pinned)", metavar="N", group="where", ge=1)
    dask_scheduler: str | None = option(None, "run the stages on this Dask cluster, each when the stages it "
                                        "reads from are done", metavar="ADDRESS", group="where")
    status: str | None = option(None, "print the stages that ran in a pipeline folder (its log.jsonl) and exit",
                                metavar="PIPELINE_DIR")


class ConfigsOptions(CommandOptions):
    """``ecgka configs``: the configs and pipelines that ship with ecgka (``ecgka.resources``)."""

    api: ClassVar[str] = "ecgka.resources:shipped_configs"

    kind: Literal["train", "data", "gate", "model"] | None = option(
        None, "list only the configs of this kind", positional=True, nargs="?", metavar="KIND",
        shown_default="every kind, and the pipelines")
    paths: bool = option(False, "print each file's path too")


class LineageOptions(CommandOptions):
    api: ClassVar[str] = "ecgka.data.lineage:lineage_lines"

    dataset: str = option(..., "a dataset folder written by `ecgka build`", positional=True, metavar="DATASET_DIR")


class ExportOptions(CommandOptions):
    api: ClassVar[str] = "ecgka.release.export:export_run"
    writes: ClassVar[str] = "out"
    writes_what: ClassVar[str] = "export folder"
    api_names: ClassVar[dict[str, str]] = {"run": "run_dir", "format": "fmt"}

    run: str = option(..., "a run folder, or REGISTRY@champion / REGISTRY@v3", positional=True, metavar="RUN")
    format: Literal["torchscript", "onnx", "mlflow"] = option("torchscript", "model format (mlflow: TorchScript "
                                                             "and an MLflow pyfunc model in DIR/mlflow)")
    out: str = option(..., "export folder", metavar="DIR")
    checkpoint: Checkpoint = option("best", "checkpoint to export")
    force: bool = option(False, "replace another model's export in --out")


class PredictOptions(CommandOptions):
    api: ClassVar[str] = "ecgka.release.scoring:predict_ecgs"

    model: str = option(..., "REGISTRY@champion, REGISTRY@v3 or a run folder", metavar="REF")
    ecg_root: str = option(..., "root of the WFDB records", metavar="DIR")
    record_list: str | None = option(None, "records to score (subject_id, study_id, path)", metavar="CSV",
                                     shown_default="DIR/record_list.csv")
    out: str = option(..., "the scores (Parquet; an existing file only with --force)", metavar="FILE.parquet")
    device: Literal["cpu", "cuda", "auto"] = option("cpu", "where the model runs")
    batch_size: int = option(256, "ECGs per batch (>= 1)", metavar="N")
    force: bool = option(False, "replace an existing --out file")


# ---- registry: list, show, register, promote (and the retraining stages) ------------------------------------------


class RegistryListOptions(CommandOptions):
    registry: str = option(..., "the registry folder", positional=True, metavar="REGISTRY")


class RegistryShowOptions(CommandOptions):
    ref: str = option(..., "a version reference", positional=True, metavar="REGISTRY@champion|REGISTRY@v3")


class RegisterOptions(CommandOptions):
    """``ecgka registry register`` and the ``register`` stage."""

    api: ClassVar[str] = "ecgka.release.registry:ModelRegistry.register"
    api_names: ClassVar[dict[str, str]] = {"run": "run_dir"}

    registry: str = option(..., "the registry folder (created by the first registration)", positional=True,
                           metavar="REGISTRY")
    run: str = option(..., "the evaluated run folder to register", positional=True, metavar="RUN_DIR")
    checkpoint: Checkpoint = option("best", "checkpoint to register")
    note: str | None = option(None, "a note kept in model.json", metavar="TEXT")

    def execute(self) -> str:
        from ecgka.release.registry import ModelRegistry

        return ModelRegistry(self.registry).register(self.run, self.checkpoint, self.note)

    def execute_reporting(self) -> tuple[str, bool]:
        """(version, created): created False when this run and checkpoint were registered already."""
        from ecgka.release.registry import ModelRegistry

        return ModelRegistry(self.registry).register_run(self.run, self.checkpoint, self.note)


class RegistryAliasOptions(CommandOptions):
    """``ecgka registry alias REG set|unset challenger [VERSION] --reason TEXT``."""

    registry: str = option(..., "the registry folder", positional=True, metavar="REGISTRY")
    action: Literal["set", "unset"] = option(..., "set or unset the alias", positional=True, metavar="ACTION")
    alias: Literal["challenger"] = option(..., "the alias (the champion changes only by promote or rollback)",
                                         positional=True, metavar="ALIAS")
    version: str | None = option(None, "the version to point it at (set only), e.g. v3", positional=True,
                                 nargs="?", metavar="VERSION")
    reason: str = option(..., "why (kept in the registry log)", metavar="TEXT")

    def execute(self) -> dict:
        from ecgka.errors import InputError
        from ecgka.release.registry import ModelRegistry

        if (self.action == "set") != (self.version is not None):
            raise InputError(f"ecgka registry alias {self.action}: "
                             + ("give the VERSION to set" if self.version is None else "unset takes no VERSION"))
        return ModelRegistry(self.registry).set_challenger(self.version, self.reason)


class _RegistryVersionAction(CommandOptions):
    """A logged change of one version's standing: ``ecgka registry ACTION REG VERSION --reason TEXT``."""

    action: ClassVar[str]

    registry: str = option(..., "the registry folder", positional=True, metavar="REGISTRY")
    reason: str = option(..., "why (kept in the registry log)", metavar="TEXT")

    def execute(self) -> dict:
        from ecgka.release.registry import ModelRegistry

        return getattr(ModelRegistry(self.registry), self.action)(self.version, self.reason)


class RegistryRollbackOptions(_RegistryVersionAction):
    """``ecgka registry rollback REG VERSION --reason TEXT``."""

    api: ClassVar[str] = "ecgka.release.promote:rollback"
    action: ClassVar[str] = "rollback"

    version: str = option(..., "the earlier version to make champion again, e.g. v2", positional=True,
                          metavar="VERSION")

    def execute(self) -> dict:
        from ecgka.release.promote import rollback  # the MLflow mirror's champion alias too

        return rollback(self.registry, self.version, self.reason)


class RegistryArchiveOptions(_RegistryVersionAction):
    """``ecgka registry archive REG VERSION --reason TEXT``."""

    api: ClassVar[str] = "ecgka.release.registry:ModelRegistry.archive"
    action: ClassVar[str] = "archive"

    version: str = option(..., "the version to archive (kept, never served), e.g. v1", positional=True,
                          metavar="VERSION")


class RegistryMlflowOptions(CommandOptions):
    """``ecgka registry mlflow REG --tracking-uri URI``: promotions set the champion alias in MLflow too."""

    api: ClassVar[str] = "ecgka.release.mlflow_export:configure_mlflow"

    registry: str = option(..., "the registry folder", positional=True, metavar="REGISTRY")
    tracking_uri: str = option(..., "the MLflow tracking and model registry URI (sqlite:///mlflow.db, "
                               "http://host:5000)", metavar="URI")
    model_name: str = option("ecgka", "the registered model's name in MLflow", metavar="NAME")
    experiment: str = option("ecgka-registry", "the MLflow experiment holding the versions' runs", metavar="NAME")

    def execute(self) -> dict:
        from ecgka.release.mlflow_export import configure_mlflow

        return configure_mlflow(self.registry, self.tracking_uri, self.model_name, self.experiment)


class PromoteOptions(CommandOptions):
    """``ecgka registry promote`` and the ``promote`` stage: the gate applied to a registered version."""

    api: ClassVar[str] = "ecgka.release.promote:promote_registered"

    registry: str = option(..., "a version reference REGISTRY@v3 (or REGISTRY@challenger), or the registry folder "
                           "with --run", positional=True, metavar="REGISTRY[@vN]")
    run: str | None = option(None, "promote the version registered from this run folder", metavar="RUN_DIR")
    gate: str | None = option(None, "the gate file (changed only by a reviewed edit: no overrides)", metavar="FILE",
                              shown_default="configs/gate/default.yaml")
    data: str | None = option(None, "compare on this dataset's test split (no subject of either model's train or "
                              "val split)", metavar="DIR", shown_default="the candidate's own dataset")
    new_registry: bool = option(False, "allow a first champion in a registry that has none (else refused: a "
                                "mistyped registry path never skips the gate)")

    def execute(self, out: str | Path | None = None) -> dict:
        from ecgka.release.promote import promote_registered

        return promote_registered(self.registry, self.run, self.gate, self.data, self.new_registry, out=out)


class CompareOptions(CommandOptions):
    """The ``compare`` stage: champion (from the registry) vs challenger on the test split of each dataset
    (the first decides)."""

    api: ClassVar[str] = "ecgka.release.compare:compare_with_champion"

    registry: str
    challenger: str
    datasets: list[str | None]
    gate: str | None = None

    def execute(self, out: str | Path) -> dict:
        from ecgka.release.compare import compare_with_champion

        return compare_with_champion(self.registry, self.challenger, self.datasets, out, self.gate)


class ChallengerOptions(CommandOptions):
    """The ``challenger`` stage: ``train`` fine-tuned from the registry's champion (``init: champion``; from
    scratch while there is none) or from scratch (``init: scratch``)."""

    api: ClassVar[str] = "ecgka.training.api:train_run"

    config: str | None = TrainOptions.model_fields["config"]
    data: str = TrainOptions.model_fields["data"]
    registry: str
    init: Literal["champion", "scratch"] = "champion"
    init_mode: Literal["full", "head"] = "full"  # full: fine-tune every weight; head: the two-stage scheme
    # a registry without a champion is refused unless this says a new one starts here (a mistyped
    # registry path would otherwise train from scratch and skip the gate as a "first registration")
    new_registry: bool = False
    overrides: list[str] = TrainOptions.model_fields["overrides"]

    def train_options(self, from_champion: bool = True) -> TrainOptions:
        """The champion was trained on an earlier dataset version: fine-tuning it on the new one is the point
        (``init.allow_other_dataset``); from scratch, ``init_mode`` has nothing to apply to."""
        init = [f"init.mode={self.init_mode}", "init.allow_other_dataset=true"] if from_champion else []
        return TrainOptions(config=self.config, data=self.data, overrides=[*init, *self.overrides])

    def champion(self) -> Path | None:
        """The registry's frozen, verified copy of the champion to fine-tune (None: from scratch); a registry
        path that is no registry, or one without a champion, is refused unless ``new_registry``."""
        from ecgka.catalog import RegistryDir
        from ecgka.errors import InputError
        from ecgka.release.registry import ModelRegistry, resolve_model

        check_registry_path(self.registry)
        has = RegistryDir(self.registry).is_registry() and "champion" in ModelRegistry(self.registry).aliases()
        if not has and not self.new_registry:
            raise InputError(f"registry {self.registry}: has no champion (is the path right?); to start a new "
                             f"registry set new_registry: true (retrain.yaml: --set new_registry=true)")
        if not has or self.init != "champion":
            return None
        return resolve_model(f"{self.registry}@champion")[0]

    def execute(self, out: str | Path, cfg: Any = None) -> dict:
        champion = self.champion()
        if champion is None and cfg is not None:  # from scratch: without the champion's init overrides
            cfg = self.train_options(False).load_config("overrides")
        return self.train_options(champion is not None).execute(out, cfg=cfg, init=champion)


def check_registry_path(path: str | Path) -> None:
    """A registry option names a registry folder, or a folder not yet there; a run folder, a dataset or any
    other folder is refused in one line."""
    from ecgka.catalog import DatasetDir, RegistryDir, RunDir
    from ecgka.errors import InputError

    folder = Path(path)
    if not folder.exists() or RegistryDir(folder).is_registry():
        return
    what = ("a run folder" if RunDir(folder).is_run() else "a dataset folder" if DatasetDir(folder).manifest_path.is_file()
            else "a file" if not folder.is_dir() else "an empty folder" if not any(folder.iterdir()) else "another folder")
    if what == "an empty folder":
        return
    raise InputError(f"registry {path}: is {what}, not a model registry")


# ---- age: prepare, pack, synth ----------------------------------------------------------------------------------------


class AgePrepareOptions(CommandOptions):
    api: ClassVar[str] = "ecgka.age.prepare:prepare_split"

    dataset: Literal["agedb", "imdb-wiki"] = option(..., "the benchmark", positional=True, metavar="DATASET")
    images: str | None = option(None, "the dataset's image folder", metavar="DIR")
    metadata: str | None = option(None, "an (age, path) table, in its row order, instead of --images", metavar="CSV")
    out: str = option(..., "output CSV (age,path,split)", metavar="CSV")


class AgePackOptions(CommandOptions):
    api: ClassVar[str] = "ecgka.age.shards:pack_age_shards"
    writes: ClassVar[str] = "out"
    writes_what: ClassVar[str] = "packed image folder"
    api_names: ClassVar[dict[str, str]] = {"images": "image_root"}

    csv: str = option(..., "the DIR split CSV (age,path,split)", metavar="CSV")
    images: str = option(..., "the folder the CSV paths are relative to", metavar="DIR")
    out: str = option(..., "output folder", metavar="DIR")
    rows_per_shard: int = option(1024, "rows per shard", metavar="N")
    workers: int = option(4, "threads checking images", metavar="W")
    force: bool = option(False, "replace a packed folder of another CSV or image folder")


class AgeSynthOptions(CommandOptions):
    """``ecgka age synth`` (alias ``ecgka synth-age``) and the ``synth_age`` stage."""

    api: ClassVar[str] = "ecgka.age.standin:generate_age_standin"

    n: int = option(1000, "images", metavar="N")
    seed: int = option(0, "random seed; same seed, same bytes", metavar="S")
    size: int = option(32, "image side in pixels", metavar="PX")

    def execute(self, out: str | Path, *, force: bool = False) -> dict:
        from ecgka.age.standin import generate_age_standin

        return generate_age_standin(out, n=self.n, seed=self.seed, size=self.size, force=force)


class AgeSynthCommand(AgeSynthOptions):
    writes: ClassVar[str] = "out"
    writes_what: ClassVar[str] = "age stand-in folder"

    out: str = option(..., "output folder (must not exist or be empty)", metavar="DIR")
    force: bool = option(False, "replace an age stand-in written with other parameters")


def api_function(model: type[CommandOptions]) -> Callable[..., Any] | None:
    """The API function a model's command calls (imported: heavy)."""
    if model.api is None:
        return None
    import importlib

    module, _, attr = model.api.partition(":")
    target: Any = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    return target
