"""Run a pipeline: stages in order, skipping those whose outputs are complete and unchanged.

Before the first stage runs, the whole job is checked (:func:`check_pipeline`): every reference resolves,
every stage's options and full config (``extends`` and overrides applied) validate, and every external
input exists; so a typo in the last stage fails in a second, not after the MIMIC build.

A stage is skipped when its marker (``PipelineDir.marker``, one per stage) holds the same fingerprint
and its output is complete. The fingerprint covers the stage's resolved options, the content of the
config files and inputs it names, and the fingerprints of the stages it reads from, so a changed config
re-runs that stage and everything downstream. An interrupted stage has no marker and runs again; the
stages themselves resume (build chunks, training checkpoints).

A stage never removes a folder that a model registry version came from (its run folder or its dataset,
for every registry a stage of the job names): a stage that must run again over such a folder writes a new
attempt folder instead (``OUT/challenger.2``), recorded in its marker, so ``${challenger}`` references
resolve to it on this run and the next ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgka import __version__
from ecgka.catalog import FolderKind, PipelineDir, claim_folder
from ecgka.config import validate_config
from ecgka.errors import ConfigError, EcgkaError, InputError
from ecgka.io import atomic_write_json, read_json, sha256_file
from ecgka.pipeline.spec import Order, PipelineSpec, StageSpec, references, resolve
from ecgka.pipeline.stages import STAGE_KINDS, StageKind

_SMALL_FILE = 64 << 20


@dataclass
class StageResult:
    id: str
    kind: str
    status: str  # "ran" or "skipped"
    seconds: float
    output: Path


def _file_digest(path: Path) -> str:
    """Content hash for config-sized files, size + mtime for large inputs (a full build re-checks them)."""
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "dir"
    stat = path.stat()
    if stat.st_size <= _SMALL_FILE:
        return sha256_file(path)
    return f"size={stat.st_size},mtime={stat.st_mtime_ns}"


def _named_files(kind: StageKind, options: dict[str, Any]) -> list[str]:
    files: list[str] = []
    for name in kind.file_options:
        value = options.get(name)
        files += value if isinstance(value, list) else [value] if value else []
    return files


def stage_fingerprint(stage: StageSpec, kind: StageKind, options: dict[str, Any], typed: Any,
                      upstream: dict[str, str]) -> str:
    payload = {
        "kind": stage.kind,
        "options": options,
        "config": kind.resolved_config(typed),
        "files": {f: _file_digest(Path(f)) for f in _named_files(kind, options)},
        "upstream": upstream,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _resolve_paths(options: dict[str, Any], base: Path) -> dict[str, Any]:
    """A relative ``config`` path is taken from the working directory, else from the project folder."""
    out = dict(options)
    value = out.get("config")
    if isinstance(value, str) and not Path(value).exists() and (base / value).exists():
        out["config"] = str(base / value)
    return out


def _prepare(stage: StageSpec, spec: PipelineSpec, outputs: dict[str, Path], out_dir: Path,
             project_dir: Path) -> tuple[StageKind, Any, dict[str, Any], Path]:
    """Resolve a stage's references and validate its options: (kind, typed options, raw options, output)."""
    kind = STAGE_KINDS.get(stage.kind)
    where = f"stage {stage.id!r}"
    raw = _resolve_paths(resolve(stage.options, outputs, spec.vars, where, Order(spec.stages), stage.id),
                         project_dir)
    options = validate_config(kind.options_model, raw, source=where)
    return kind, options, raw, kind.output_of(options, PipelineDir(out_dir).stage_dir(stage.id))


@contextmanager
def _in_stage(stage_id: str) -> Iterator[None]:
    """Errors raised while checking a stage's config name the stage first."""
    where = f"stage {stage_id!r}"
    try:
        yield
    except EcgkaError as exc:
        if str(exc).startswith(where):
            raise
        raise type(exc)(f"{where}: {exc}") from None


def _pairs(written: Any, resolved: Any) -> list[tuple[Any, Any]]:
    """(as written, as resolved) for an option value or each item of a list."""
    if isinstance(written, list) and isinstance(resolved, list):
        return list(zip(written, resolved, strict=False))
    return [(written, resolved)]


def check_inputs(stage: StageSpec, kind: StageKind, raw: dict[str, Any]) -> None:
    """Every external input path of a stage exists; an earlier stage's output (``${stage}``) may not yet."""
    for name in kind.input_options:
        for written, resolved in _pairs(stage.options.get(name), raw.get(name)):
            made_by_job = any(not ref.startswith("vars.") for ref in references(written))
            if resolved in (None, "") or made_by_job or Path(str(resolved)).exists():
                continue
            raise InputError(f"stage {stage.id!r}: {name}: {resolved}: not found")


def check_pipeline(spec: PipelineSpec, out_dir: Path, project_dir: Path, only: set[str] | None = None) -> list[str]:
    """Resolve and validate every stage, its full config and its inputs without running anything.

    Inputs are checked for the stages that will run (``only``, default all); returns the stage ids.
    """
    claim_folder(out_dir, FolderKind.PIPELINE)  # a file, a foreign folder or another kind: refused
    outputs: dict[str, Path] = {}
    for stage in spec.stages:
        kind, options, raw, output = _prepare(stage, spec, outputs, out_dir, project_dir)
        if only is None or stage.id in only:
            check_inputs(stage, kind, raw)
        with _in_stage(stage.id):
            kind.resolved_config(options)
            if only is None or stage.id in only:
                kind.check(options)
        outputs[stage.id] = _recorded_output(PipelineDir(out_dir), stage.id, output)
    return [stage.id for stage in spec.stages]


def run_pipeline(
    spec: PipelineSpec,
    out_dir: Path,
    project_dir: Path,
    only: set[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> list[StageResult]:
    """Check the whole job, then execute ``spec`` into ``out_dir``; returns what ran and what was skipped."""
    check_pipeline(spec, out_dir, project_dir, only)
    _claim(spec, out_dir, force, log)
    folder = PipelineDir(out_dir)
    folder.markers_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    fingerprints: dict[str, str] = {}
    results: list[StageResult] = []
    registries = _registries(spec)
    for stage in spec.stages:
        kind, options, raw, output = _prepare(stage, spec, outputs, out_dir, project_dir)
        upstream = {name: fingerprints[name] for name in sorted(references(stage.options)) if name in fingerprints}
        fingerprint = stage_fingerprint(stage, kind, raw, options, upstream)
        own_folder = output == folder.stage_dir(stage.id)
        output = _recorded_output(folder, stage.id, output)
        outputs[stage.id], fingerprints[stage.id] = output, fingerprint
        marker = folder.marker(stage.id)
        recorded = read_json(marker) if marker.exists() else {}
        previous = recorded.get("fingerprint")
        made_from = previous or recorded.get("pending")
        done = previous == fingerprint
        selected = only is None or stage.id in only
        if not selected or (done and not force and kind.is_complete(options, output)):
            if selected:
                log(f"[skip] {stage.id} ({stage.kind}): complete and unchanged")
            results.append(StageResult(stage.id, stage.kind, "skipped", 0.0, output))
            continue
        fresh = force or (made_from is not None and made_from != fingerprint)
        if own_folder and (fresh or made_from is None) and output.exists() and output.resolve() in _registered_origins(registries):
            kept, output = output, _next_attempt(folder.stage_dir(stage.id))
            outputs[stage.id] = output
            kind, options, raw, _ = _prepare(stage, spec, outputs, out_dir, project_dir)
            log(f"{kept}: a registry version came from it, so it stays; this attempt writes {output}")
        log(f"[run ] {stage.id} ({stage.kind}) -> {output}")
        if fresh:
            kind.reset(output)  # made from other inputs: start afresh instead of resuming
        # no fingerprint until it finishes; the pending one and the attempt folder are remembered
        atomic_write_json(marker, {"id": stage.id, "kind": stage.kind, "fingerprint": None, "pending": fingerprint,
                                   "output": str(output)})
        start = time.perf_counter()
        kind.run(options, output)
        seconds = time.perf_counter() - start
        atomic_write_json(marker, {"id": stage.id, "kind": stage.kind, "fingerprint": fingerprint,
                                   "seconds": round(seconds, 3), "ecgka_version": __version__,
                                   "output": str(output)})
        log(f"[done] {stage.id} in {seconds:.1f} s")
        results.append(StageResult(stage.id, stage.kind, "ran", seconds, output))
    _write_summary(spec, out_dir, results)
    return results


def _recorded_output(folder: PipelineDir, stage_id: str, output: Path) -> Path:
    """The attempt folder a stage's marker records (``OUT/challenger.2``), else ``output``."""
    marker = folder.marker(stage_id)
    if output != folder.stage_dir(stage_id) or not marker.is_file():
        return output
    recorded = read_json(marker).get("output")
    return Path(recorded) if recorded else output


def _next_attempt(default: Path) -> Path:
    n = 2
    while default.with_name(f"{default.name}.{n}").exists():
        n += 1
    return default.with_name(f"{default.name}.{n}")


def _registries(spec: PipelineSpec) -> list[Path]:
    """The registry folders the job's stages name (``registry:`` options that resolve without outputs)."""
    found = []
    for stage in spec.stages:
        value = stage.options.get("registry")
        try:
            resolved = resolve(value, {}, spec.vars, f"stage {stage.id!r}")
        except ConfigError:
            continue
        if isinstance(resolved, str) and resolved:
            found.append(Path(resolved))
    return found


def _registered_origins(registries: list[Path]) -> set[Path]:
    """Every run folder and dataset a version of these registries was made from (resolved paths)."""
    from ecgka.catalog import RegistryDir
    from ecgka.release.registry import ModelRegistry

    origins: set[Path] = set()
    for path in registries:
        if not RegistryDir(path).is_registry():
            continue
        reg = ModelRegistry(path)
        for name in reg.versions():
            record = reg.record(name)
            for origin in ((record.get("run") or {}).get("path"), (record.get("dataset") or {}).get("path")):
                if origin:
                    origins.add(Path(origin).resolve())
    return origins


def _claim(spec: PipelineSpec, out_dir: Path, force: bool, log: Callable[[str], None]) -> None:
    """Mark ``out_dir`` as this pipeline's folder; another pipeline's folder is replaced only with ``force``."""
    claim = claim_folder(out_dir, FolderKind.PIPELINE)
    if claim.check_replace(spec.name, force=force, what=f"pipeline {claim.content!r}"):
        claim.clear()
        log(f"{out_dir}: replaced the outputs of pipeline {claim.content!r} (--force)")
    if claim.content != spec.name:
        claim.write_marker(spec.name)


def _write_summary(spec: PipelineSpec, out_dir: Path, results: list[StageResult]) -> None:
    atomic_write_json(PipelineDir(out_dir).summary, {
        "name": spec.name,
        "stages": [{"id": r.id, "kind": r.kind, "status": r.status, "seconds": round(r.seconds, 3),
                    "output": str(r.output)} for r in results],
    })


def check_only(spec: PipelineSpec, only: set[str] | None) -> None:
    if only:
        unknown = only - {s.id for s in spec.stages}
        if unknown:
            raise ConfigError(f"--only names unknown stages: {', '.join(sorted(unknown))}")
