"""``ecgka run pipelines/NAME.yaml``: run a named batch job, resuming and skipping finished stages."""

from __future__ import annotations

import argparse
from pathlib import Path

from ecgka.config import parse_override
from ecgka.errors import ConfigError

HELP = "run a pipeline of stages (pipelines/NAME.yaml) as one resumable batch job"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", type=Path, help="pipeline file, e.g. pipelines/demo.yaml")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default outputs/NAME)")
    parser.add_argument("--set", dest="variables", nargs="*", default=[], metavar="NAME=VALUE",
                        help="pipeline variables, e.g. ecg_root=/data/mimic-iv-ecg")
    parser.add_argument("--only", nargs="*", default=None, metavar="STAGE", help="run only these stages")
    parser.add_argument("--force", action="store_true", help="re-run stages even when complete")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--check", action="store_true",
                        help="resolve and validate every stage and config without running anything")


def run(args: argparse.Namespace) -> int:
    from ecgka.catalog import ReportDir
    from ecgka.pipeline import load_pipeline, run_pipeline
    from ecgka.pipeline.runner import check_only

    if not args.pipeline.is_file():
        raise ConfigError(f"{args.pipeline}: pipeline file not found")
    variables = {}
    for text in args.variables:
        keys, value = parse_override(text)
        variables[".".join(keys)] = value
    spec = load_pipeline(args.pipeline, variables)
    if args.list:
        for stage in spec.stages:
            print(f"{stage.id:<40} {stage.kind}")
        return 0
    only = set(args.only) if args.only else None
    check_only(spec, only)
    out = args.out or Path("outputs") / spec.name
    project_dir = args.pipeline.resolve().parent.parent
    if args.check:
        from ecgka.pipeline.runner import check_pipeline

        ids = check_pipeline(spec, out, project_dir)
        print(f"pipeline {spec.name}: {len(ids)} stages resolve and validate")
        return 0
    results = run_pipeline(spec, out, project_dir, only=only, force=args.force)
    ran = sum(r.status == "ran" for r in results)
    print(f"\npipeline {spec.name}: {ran} stage(s) ran, {len(results) - ran} skipped; outputs in {out}")
    for html in (ReportDir(r.output).html for r in results if r.kind == "report"):
        if html.is_file():  # not when the report stage was left out (--only) and never ran
            print(f"report: {html}")
    return 0
