"""``ecgka run NAME|FILE``: run a named batch job, resuming and skipping finished stages.

NAME is a shipped pipeline (``retrain``, ``pipelines/retrain.yaml``: ``ecgka.resources``), found from any
folder; ``ecgka run --list`` lists them. A path to a pipeline file of one's own works as a path.
"""

from __future__ import annotations

from pathlib import Path

from ecgka.cli.options import Command, RunOptions
from ecgka.config import parse_override
from ecgka.errors import ConfigError


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
        raise ConfigError("no pipeline file given (usage: ecgka run NAME|FILE [--set NAME=VALUE ...]; "
                          "`ecgka run --list` lists the shipped pipelines)")
    return pipeline, variables


def _file_after_only(pipeline: Path | None, only: list[str] | None) -> tuple[Path | None, set[str] | None]:
    """``--only a b pipelines/p.yaml``: a word with a ``/`` or a YAML suffix is no stage id but the file."""
    words = list(only or [])
    files = [w for w in words if "/" in w or w.endswith((".yaml", ".yml"))]
    if pipeline is None and len(files) == 1:
        pipeline = Path(files[0])
        words.remove(files[0])
    return pipeline, set(words) if words else None


def run(o: RunOptions) -> int:
    from ecgka.catalog import ReportDir
    from ecgka.pipeline import load_pipeline, run_pipeline
    from ecgka.pipeline.runner import check_only
    from ecgka.resources import find_pipeline, shipped_pipelines

    pipeline, only = _file_after_only(Path(o.pipeline) if o.pipeline else None, o.only)
    if pipeline is None and o.list_stages and not o.variables:  # `ecgka run --list`: what ships
        print("\n".join(shipped_pipelines()))
        return 0
    pipeline, variables = split_set_values(pipeline, [t for group in o.variables for t in group])
    pipeline = find_pipeline(pipeline)  # a file, or a shipped pipeline's name (retrain), from any folder
    spec = load_pipeline(pipeline, variables)
    if o.list_stages:
        for stage in spec.stages:
            print(f"{stage.id:<40} {stage.kind}")
        return 0
    check_only(spec, only)
    out = Path(o.out) if o.out else Path("outputs") / spec.name
    project_dir = pipeline.resolve().parent.parent
    if o.check:
        from ecgka.pipeline.runner import check_pipeline

        ids = check_pipeline(spec, out, project_dir, only)
        print(f"pipeline {spec.name}: {len(ids)} stages resolve and validate")
        return 0
    results = run_pipeline(spec, out, project_dir, only=only, force=o.force)
    ran = sum(r.status == "ran" for r in results)
    print(f"\npipeline {spec.name}: {ran} stage(s) ran, {len(results) - ran} skipped; outputs in {out}")
    for html in (ReportDir(r.output).html for r in results if r.kind == "report"):
        if html.is_file():  # not when the report stage was left out (--only) and never ran
            print(f"report: {html}")
    return 0


COMMAND = Command(RunOptions, run)
