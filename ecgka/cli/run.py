"""``ecgka run pipelines/NAME.yaml``: run a named batch job, resuming and skipping finished stages."""

from __future__ import annotations

import argparse
from pathlib import Path

from ecgka.config import parse_override
from ecgka.errors import ConfigError

HELP = "run a pipeline of stages (pipelines/NAME.yaml) as one resumable batch job"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", type=Path, nargs="?", help="pipeline file, e.g. pipelines/demo.yaml")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default outputs/NAME)")
    parser.add_argument("--set", dest="variables", nargs="+", action="append", default=[], metavar="NAME=VALUE",
                        help="pipeline variables declared under 'vars:', e.g. --set ecg_root=DIR labs=FILE "
                             "(repeatable; may come before or after the pipeline file)")
    parser.add_argument("--only", nargs="*", default=None, metavar="STAGE", help="run only these stages")
    parser.add_argument("--force", action="store_true", help="re-run stages even when complete")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--check", action="store_true",
                        help="resolve and validate every stage and config without running anything")


def split_set_values(pipeline: Path | None, texts: list[str]) -> tuple[Path, dict[str, object]]:
    """The pipeline file and the ``--set`` variables.

    ``--set`` takes several NAME=VALUE words, so in ``--set x=1 pipelines/p.yaml`` it also takes the file:
    the one word without ``=`` is the pipeline file when none was given elsewhere; anything else is an error.
    """
    variables: dict[str, object] = {}
    for text in texts:
        if "=" not in text and pipeline is None:
            pipeline = Path(text)
            continue
        if "=" not in text:
            raise ConfigError(f"--set {text}: expected NAME=VALUE (the pipeline file is already {pipeline})")
        keys, value = parse_override(text)
        variables[".".join(keys)] = value
    if pipeline is None:
        raise ConfigError("no pipeline file given (usage: ecgka run pipelines/NAME.yaml [--set NAME=VALUE ...])")
    return pipeline, variables


def _file_after_only(pipeline: Path | None, only: list[str] | None) -> tuple[Path | None, set[str] | None]:
    """``--only a b pipelines/p.yaml``: a word with a ``/`` or a YAML suffix is no stage id but the file."""
    words = list(only or [])
    files = [w for w in words if "/" in w or w.endswith((".yaml", ".yml"))]
    if pipeline is None and len(files) == 1:
        pipeline = Path(files[0])
        words.remove(files[0])
    return pipeline, set(words) if words else None


def run(args: argparse.Namespace) -> int:
    from ecgka.catalog import ReportDir
    from ecgka.pipeline import load_pipeline, run_pipeline
    from ecgka.pipeline.runner import check_only

    pipeline, only = _file_after_only(args.pipeline, args.only)
    pipeline, variables = split_set_values(pipeline, [t for group in args.variables for t in group])
    if not pipeline.is_file():
        raise ConfigError(f"{pipeline}: pipeline file not found")
    spec = load_pipeline(pipeline, variables)
    if args.list:
        for stage in spec.stages:
            print(f"{stage.id:<40} {stage.kind}")
        return 0
    check_only(spec, only)
    out = args.out or Path("outputs") / spec.name
    project_dir = pipeline.resolve().parent.parent
    if args.check:
        from ecgka.pipeline.runner import check_pipeline

        ids = check_pipeline(spec, out, project_dir, only)
        print(f"pipeline {spec.name}: {len(ids)} stages resolve and validate")
        return 0
    results = run_pipeline(spec, out, project_dir, only=only, force=args.force)
    ran = sum(r.status == "ran" for r in results)
    print(f"\npipeline {spec.name}: {ran} stage(s) ran, {len(results) - ran} skipped; outputs in {out}")
    for html in (ReportDir(r.output).html for r in results if r.kind == "report"):
        if html.is_file():  # not when the report stage was left out (--only) and never ran
            print(f"report: {html}")
    return 0
