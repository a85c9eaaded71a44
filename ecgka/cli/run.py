"""``ecgka run NAME|FILE``: run a named batch job, resuming and skipping finished stages.

NAME is a shipped pipeline (``retrain``, ``pipelines/retrain.yaml``: ``ecgka.resources``), found from any
folder; ``ecgka run --list`` lists them. A path to a pipeline file of one's own works as a path.

``--parallel N`` runs independent stages at once on a local Dask cluster (``ecgka.pipeline.clusters``),
``--dask-scheduler ADDRESS`` on an existing one; ``--status PIPELINE_DIR`` prints what ran
(``ecgka.pipeline.status``). A failed stage stops only its downstream stages; the run ends with a summary
and a non-zero exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    from ecgka.pipeline import load_pipeline
    from ecgka.pipeline.runner import check_only
    from ecgka.resources import find_pipeline, shipped_pipelines

    if o.status is not None:
        from ecgka.pipeline.status import read_log, status_table

        print(status_table(read_log(o.status)))
        return 0
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
    with _executor(o) as executor:
        return _run(spec, out, project_dir, only, o.force, executor)


@contextlib.contextmanager
def _executor(o: RunOptions) -> Iterator[object]:
    """None (stages in this process, one after another), or a Dask executor: on the cluster at
    ``--dask-scheduler``, or on a local cluster of ``--parallel`` workers started (and closed) here."""
    if o.dask_scheduler is None and o.parallel is None:
        yield None
        return
    from ecgka.pipeline.executors import DaskExecutor, dask_client_class

    dask_client_class()  # without the extra: one line naming it, before anything starts
    if o.dask_scheduler is not None:
        yield DaskExecutor(o.dask_scheduler)
        return
    from ecgka.pipeline.clusters import local_cluster

    cluster = local_cluster(int(o.parallel or 1))
    try:
        yield DaskExecutor(cluster)
    finally:
        cluster.close()


def _run(spec: Any, out: Path, project_dir: Path, only: set[str] | None, force: bool, executor: object) -> int:
    from ecgka.catalog import ReportDir
    from ecgka.pipeline import run_pipeline
    from ecgka.pipeline.runner import PipelineFailed

    try:
        results = run_pipeline(spec, out, project_dir, only=only, force=force, executor=executor)
    except PipelineFailed as exc:
        print(summary_line(spec.name, exc.results, out))
        raise
    print(summary_line(spec.name, results, out))
    for html in (ReportDir(r.output).html for r in results if r.kind == "report"):
        if html.is_file():  # not when the report stage was left out (--only) and never ran
            print(f"report: {html}")
    return 0


def summary_line(name: str, results: list[Any], out: Path) -> str:
    """``pipeline NAME: 3 stage(s) ran, 2 skipped[, 1 failed, 2 not run]; outputs in OUT``."""
    count = {s: sum(r.status == s for r in results) for s in ("ran", "skipped", "failed", "not run")}
    text = f"\npipeline {name}: {count['ran']} stage(s) ran, {count['skipped']} skipped"
    if count["failed"] or count["not run"]:
        text += f", {count['failed']} failed, {count['not run']} not run"
    text += f"; outputs in {out}"
    for r in results:
        if r.status == "failed":
            text += f"\n  failed: {r.id}: {r.error}"
        elif r.status == "not run":
            text += f"\n  not run: {r.id} (downstream of a failure)"
    return text


COMMAND = Command(RunOptions, run)
