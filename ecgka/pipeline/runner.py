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

import contextlib
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
from ecgka.locks import FolderLock
from ecgka.pipeline.spec import Order, PipelineSpec, StageSpec, references, resolve, resolve_files
from ecgka.pipeline.stages import STAGE_KINDS, StageKind

_SMALL_FILE = 64 << 20  # larger input files are identified by size and mtime, not content


@dataclass
class StageResult:
    id: str
    kind: str
    status: str  # "ran" or "skipped"
    seconds: float
    output: Path


def _file_digest(path: Path) -> dict[str, Any]:
    """What identifies an input file's content: its SHA-256 up to 64 MiB, its size and mtime above (a lab
    export of gigabytes is not re-read on every run; the build itself re-checks its inputs)."""
    stat = path.stat()
    if stat.st_size <= _SMALL_FILE:
        return {"sha256": sha256_file(path)}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def location(value: str, out_dir: Path) -> str:
    """Where a path option points, whatever its spelling and the working directory: ``OUT/<relative>`` inside
    the pipeline folder (so a moved pipeline folder keeps its fingerprints), else the resolved absolute path.
    A registry reference keeps its ``@version`` (``REGISTRY@v3``)."""
    path, ref = Path(value).expanduser(), ""
    if "@" in value and not path.exists():
        head, _, tail = value.rpartition("@")
        path, ref = Path(head).expanduser(), "@" + tail
    resolved = path.resolve()
    try:
        inside = resolved.relative_to(out_dir.resolve())
    except ValueError:
        return str(resolved) + ref
    return ("OUT/" + inside.as_posix() if inside.parts else "OUT") + ref


def _identity(value: Any, out_dir: Path, config: bool) -> Any:
    """A path option's value as the fingerprint sees it: a config file by its content alone; any other path by
    its location, and a file also by its content (or size and time)."""
    if isinstance(value, list):
        return [_identity(v, out_dir, config) for v in value]
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    if config:
        return _file_digest(path) if path.is_file() else {"missing": location(value, out_dir)}
    found = {"at": location(value, out_dir)}
    return {**found, **_file_digest(path)} if path.is_file() else found


def _portable_vars(variables: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Variables as the fingerprint sees them: one naming an existing path (``--set image_root=imgs``) by its
    location, so an override built from it (``data.image.root=${vars.image_root}``) is the same however the
    path was spelled."""
    return {k: location(v, out_dir) if isinstance(v, str) and v and Path(v).expanduser().exists() else v
            for k, v in variables.items()}


def stage_fingerprint(stage: StageSpec, kind: StageKind, spec: PipelineSpec, outputs: dict[str, Path],
                      raw: dict[str, Any], typed: Any, upstream: dict[str, str], out_dir: Path,
                      project_dir: Path) -> str:
    """The stage's fingerprint: its options with every ``${stage}`` reference as a location in the pipeline
    folder and every path option by its identity (:func:`_identity`), its fully resolved config, and the
    fingerprints of the stages it reads. Nothing in it depends on the spelling of ``--out`` or of an input
    path, on the working directory, or on where the pipeline folder is."""
    portable_outputs = {sid: location(str(path), out_dir) for sid, path in outputs.items()}
    where = f"stage {stage.id!r}"
    options = resolve(stage.options, portable_outputs, _portable_vars(spec.vars, out_dir), where)
    for name in kind.path_options:
        if name in raw:
            options[name] = _identity(raw[name], out_dir, config=name in kind.config_options)
    payload = {
        "kind": stage.kind,
        "options": options,
        "config": _portable_config(kind, typed, options, raw),
        "upstream": upstream,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _portable_config(kind: StageKind, typed: Any, portable: dict[str, Any], raw: dict[str, Any]) -> Any:
    """The stage's resolved config, read from options whose non-path strings are portable (an override
    naming a path), the path options being the real ones (the config file is read from where it is)."""
    mixed = {**portable, **{name: raw[name] for name in kind.path_options if name in raw}}
    try:
        return kind.resolved_config(validate_config(kind.options_model, mixed, source="fingerprint"))
    except EcgkaError:  # a portable value the config refuses (it checks a path): the real one
        return kind.resolved_config(typed)


def _resolve_paths(options: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file paths: from the working directory, else the project folder or the shipped files
    (``spec.resolve_files``)."""
    return resolve_files(options, base)


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
    """Check the whole job, then execute ``spec`` into ``out_dir``; returns what ran and what was skipped.

    The pipeline folder is locked for the whole run and each stage's folder while the stage runs
    (``ecgka.locks``): a second writer of either is refused with one line naming the holder (exit 75)."""
    check_pipeline(spec, out_dir, project_dir, only)
    with FolderLock(out_dir, f"pipeline folder ({spec.name})"):
        return _run_locked(spec, out_dir, project_dir, only, force, log)


def _run_locked(spec: PipelineSpec, out_dir: Path, project_dir: Path, only: set[str] | None, force: bool,
                log: Callable[[str], None]) -> list[StageResult]:
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
        fingerprint = stage_fingerprint(stage, kind, spec, outputs, raw, options, upstream, out_dir, project_dir)
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
        lock_target = kind.lock_of(options, output)
        with FolderLock(lock_target, f"stage {stage.id!r} output") if lock_target else contextlib.nullcontext():
            if fresh:
                kind.reset(output)  # made from other inputs: start afresh instead of resuming
            # no fingerprint until it finishes; the pending one and the attempt folder are remembered
            atomic_write_json(marker, {"id": stage.id, "kind": stage.kind, "fingerprint": None,
                                       "pending": fingerprint, "output": _marker_output(output, out_dir)})
            start = time.perf_counter()
            kind.run(options, output)
            seconds = time.perf_counter() - start
            atomic_write_json(marker, {"id": stage.id, "kind": stage.kind, "fingerprint": fingerprint,
                                       "seconds": round(seconds, 3), "ecgka_version": __version__,
                                       "output": _marker_output(output, out_dir)})
        log(f"[done] {stage.id} in {seconds:.1f} s" + _result_line(kind, options, output))
        results.append(StageResult(stage.id, stage.kind, "ran", seconds, output))
    _write_summary(spec, out_dir, results)
    return results


def _result_line(kind: StageKind, options: Any, output: Path) -> str:
    """``: <the stage's key result>`` (a run's best val epoch, a dataset's counts...), or nothing."""
    try:
        text = kind.result(options, output)
    except (EcgkaError, OSError, ValueError, KeyError, TypeError):  # a summary never fails a finished stage
        return ""
    return f": {text}" if text else ""


def _marker_output(output: Path, out_dir: Path) -> str:
    """A stage's output as its marker records it: relative to the pipeline folder when inside (the folder
    may move), else its absolute path."""
    try:
        return output.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        return str(output.resolve())


def _recorded_output(folder: PipelineDir, stage_id: str, output: Path) -> Path:
    """The attempt folder a stage's marker records (``OUT/challenger.2``), else ``output``."""
    marker = folder.marker(stage_id)
    if output != folder.stage_dir(stage_id) or not marker.is_file():
        return output
    recorded = read_json(marker).get("output")
    if not recorded:
        return output
    inside = folder.path / recorded
    if Path(recorded).exists() and (Path(recorded).is_absolute() or not inside.exists()):
        return Path(recorded)  # outside the pipeline folder (or a marker of an older version: as spelled then)
    if Path(recorded).is_absolute() and (folder.path / Path(recorded).name).exists():
        return folder.path / Path(recorded).name  # an older marker's absolute path, the folder since moved
    return inside


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
