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
    status: str  # "ran", "skipped", "failed" or "not run" (downstream of a failure)
    seconds: float
    output: Path
    error: str | None = None
    exit_code: int = 0


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
    options = resolve(kind.fingerprinted(stage.options), portable_outputs, _portable_vars(spec.vars, out_dir), where)
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
    executor: Any = None,
) -> list[StageResult]:
    """Check the whole job, then execute ``spec`` into ``out_dir``; returns what ran and what was skipped.

    ``executor``: where the stages run (``ecgka.pipeline.executors``): in this process one after another
    (default), or on Dask, each stage as soon as the stages it reads from are done. A failed stage stops
    only the stages downstream of it; the others go on, and the run ends with :class:`PipelineFailed`.

    The pipeline folder is locked for the whole run and each stage's folder while the stage runs
    (``ecgka.locks``): a second writer of either is refused with one line naming the holder (exit 75)."""
    from ecgka.pipeline.executors import InlineExecutor

    check_pipeline(spec, out_dir, project_dir, only)
    with FolderLock(out_dir, f"pipeline folder ({spec.name})"):
        executor = executor or InlineExecutor(log)
        try:
            results = _run_locked(spec, out_dir, project_dir, only, force, log, executor)
        finally:
            executor.close()  # after Ctrl-C or SIGTERM: the running stages end before the lock is released
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise PipelineFailed(results)
    return results


class PipelineFailed(EcgkaError):
    """Some stages failed (and their downstream stages did not run); the others ran. The exit code is the
    failed stages' own when they agree (2 for bad input, 75 for a locked folder), else 1."""

    def __init__(self, results: list[StageResult]):
        self.results = results
        failed = [r for r in results if r.status == "failed"]
        blocked = [r.id for r in results if r.status == "not run"]
        codes = {r.exit_code for r in failed}
        self.exit_code = codes.pop() if len(codes) == 1 else 1
        parts = [f"stage {r.id!r} failed: {r.error}" for r in failed]
        if blocked:
            parts.append(f"not run, downstream of a failure: {', '.join(blocked)}")
        super().__init__("; ".join(parts))


class _Job:
    """What the runner knows of the whole job while it runs: outputs, fingerprints, stage states."""

    def __init__(self, spec: PipelineSpec, out_dir: Path, project_dir: Path):
        self.folder = PipelineDir(out_dir)
        self.outputs: dict[str, Path] = {}
        self.fingerprints: dict[str, str] = {}
        self.results: dict[str, StageResult] = {}
        self.reads = stage_graph(spec, out_dir, project_dir)


def _paths(value: Any) -> list[Path]:
    if isinstance(value, list):
        return [p for v in value for p in _paths(v)]
    return [Path(value).expanduser().resolve()] if isinstance(value, str) and value else []


def _overlap(a: set[Path], b: set[Path]) -> bool:
    """Whether some path of ``a`` is, holds or lies in some path of ``b``."""
    return any(x == y or x.is_relative_to(y) or y.is_relative_to(x) for x in a for y in b)


def stage_graph(spec: PipelineSpec, out_dir: Path, project_dir: Path) -> dict[str, set[str]]:
    """The stages each stage waits for: those it names (``${stage}``), and every earlier stage that writes
    where it reads or writes (its output or the folder it locks: an evaluation writes into the run folder a
    report reads; a register stage into the registry a challenger reads), so a parallel run sees what a
    sequential one, in file order, would."""
    outputs: dict[str, Path] = {}
    writes: dict[str, set[Path]] = {}
    graph: dict[str, set[str]] = {}
    for stage in spec.stages:
        kind, options, raw, output = _prepare(stage, spec, outputs, out_dir, project_dir)
        output = _recorded_output(PipelineDir(out_dir), stage.id, output)
        named = {r for r in references(stage.options) if not r.startswith("vars.")}
        lock = kind.lock_of(options, output)
        writes[stage.id] = {p.resolve() for p in (output, lock) if p is not None}
        touches = writes[stage.id] | {outputs[r].resolve() for r in named} | {
            p for name in kind.path_options for p in _paths(raw.get(name))}
        graph[stage.id] = named | {earlier for earlier, written in writes.items()
                                   if earlier != stage.id and _overlap(written, touches)}
        outputs[stage.id] = output
    return graph


def upstream_state(reads: set[str], results: dict[str, StageResult]) -> str:
    """Whether a stage may start: "ready" (every stage it reads ran or was skipped), "blocked" (one failed
    or did not run), else "waiting"."""
    states = [results[name].status if name in results else None for name in reads]
    if any(state in ("failed", "not run") for state in states):
        return "blocked"
    return "ready" if all(state in ("ran", "skipped") for state in states) else "waiting"


def _run_locked(spec: PipelineSpec, out_dir: Path, project_dir: Path, only: set[str] | None, force: bool,
                log: Callable[[str], None], executor: Any) -> list[StageResult]:
    """Start each stage once the stages it reads from are done (in file order among those ready), as many at
    once as the executor takes; write its marker and ``log.jsonl`` line when it ends."""
    _claim(spec, out_dir, force, log)
    job = _Job(spec, out_dir, project_dir)
    job.folder.markers_dir.mkdir(parents=True, exist_ok=True)
    registries = _registries(spec)
    waiting = list(spec.stages)
    running: dict[str, tuple[StageSpec, Any, str]] = {}
    while waiting or running:
        started = False
        for stage in list(waiting):
            if executor.capacity is not None and len(running) >= executor.capacity:
                break
            state = upstream_state(job.reads[stage.id], job.results)
            if state == "waiting":
                continue
            waiting.remove(stage)
            started = True
            if state == "blocked":
                log(f"[stop] {stage.id} ({stage.kind}): not run, a stage it reads from failed")
                job.results[stage.id] = StageResult(stage.id, stage.kind, "not run", 0.0,
                                                    job.folder.stage_dir(stage.id))
                continue
            planned = _plan(stage, spec, job, out_dir, project_dir, only, force, registries, log)
            if planned is not None:
                executor.submit(planned[0])
                running[stage.id] = (stage, planned[0], planned[1])
            break  # re-scan from the top: this stage may have made an earlier one ready (it was skipped)
        if started:
            continue
        if not running:  # cannot happen: references name earlier stages only (check_pipeline)
            raise RuntimeError(f"no stage can start: {', '.join(s.id for s in waiting)}")
        for stage_job, outcome in executor.wait():
            stage, _, fingerprint = running.pop(stage_job.stage_id)
            _finish(stage, stage_job, outcome, outcome.seconds, fingerprint, job, out_dir, log)
    results = [job.results[stage.id] for stage in spec.stages]
    _write_summary(spec, out_dir, results)
    return results


def _plan(stage: StageSpec, spec: PipelineSpec, job: _Job, out_dir: Path, project_dir: Path,
          only: set[str] | None, force: bool, registries: list[Path],
          log: Callable[[str], None]) -> tuple[Any, str] | None:
    """Decide a ready stage: skipped (recorded, None) or to run: (its StageJob, its fingerprint), its marker
    then pending. Computed when its upstream stages are done, so input files they made are fingerprinted."""
    from ecgka.pipeline.executors import StageJob

    folder, outputs = job.folder, job.outputs
    kind, options, raw, output = _prepare(stage, spec, outputs, out_dir, project_dir)
    upstream = {name: job.fingerprints[name] for name in sorted(references(stage.options))
                if name in job.fingerprints}
    fingerprint = stage_fingerprint(stage, kind, spec, outputs, raw, options, upstream, out_dir, project_dir)
    own_folder = output == folder.stage_dir(stage.id)
    output = _recorded_output(folder, stage.id, output)
    outputs[stage.id], job.fingerprints[stage.id] = output, fingerprint
    marker = folder.marker(stage.id)
    recorded = read_json(marker) if marker.exists() else {}
    previous = recorded.get("fingerprint")
    made_from = previous or recorded.get("pending")
    done = previous == fingerprint
    selected = only is None or stage.id in only
    if not selected or (done and not force and kind.is_complete(options, output)):
        if selected:
            log(f"[skip] {stage.id} ({stage.kind}): complete and unchanged")
        job.results[stage.id] = StageResult(stage.id, stage.kind, "skipped", 0.0, output)
        return None
    fresh = force or (made_from is not None and made_from != fingerprint)
    if own_folder and (fresh or made_from is None) and output.exists() and output.resolve() in _registered_origins(registries):
        kept, output = output, _next_attempt(folder.stage_dir(stage.id))
        outputs[stage.id] = output
        kind, options, raw, _ = _prepare(stage, spec, outputs, out_dir, project_dir)
        log(f"{kept}: a registry version came from it, so it stays; this attempt writes {output}")
    log(f"[run ] {stage.id} ({stage.kind}) -> {output}")
    # no fingerprint until it finishes; the pending one and the attempt folder are remembered
    atomic_write_json(marker, {"id": stage.id, "kind": stage.kind, "fingerprint": None,
                               "pending": fingerprint, "output": _marker_output(output, out_dir)})
    return StageJob(stage.id, stage.kind, kind, options, raw, output, fresh, folder.console(stage.id)), fingerprint


def _finish(stage: StageSpec, stage_job: Any, outcome: Any, seconds: float, fingerprint: str, job: _Job,
            out_dir: Path, log: Callable[[str], None]) -> None:
    """Record how a stage ended: its marker when done, its ``log.jsonl`` line, its result."""
    output = stage_job.output
    status = "ran" if outcome.ok else "failed"
    if outcome.ok:
        atomic_write_json(job.folder.marker(stage.id), {
            "id": stage.id, "kind": stage.kind, "fingerprint": fingerprint, "seconds": round(seconds, 3),
            "ecgka_version": __version__, "output": _marker_output(output, out_dir)})
        log(f"[done] {stage.id} in {seconds:.1f} s" + _result_line(stage_job.kind, stage_job.options, output))
    else:
        log(f"[fail] {stage.id} after {seconds:.1f} s: {outcome.error}")
    append_log(job.folder.log, {"stage": stage.id, "kind": stage.kind, "start": outcome.start,
                                "end": outcome.end, "seconds": round(seconds, 3),
                                "status": "done" if outcome.ok else "failed", "worker": outcome.worker,
                                "gpu": outcome.gpu, "exit_code": outcome.exit_code, "error": outcome.error})
    job.results[stage.id] = StageResult(stage.id, stage.kind, status, seconds, output,
                                        error=outcome.error, exit_code=outcome.exit_code)


def append_log(path: Path, record: dict[str, Any]) -> None:
    """One JSON line appended (and flushed to disk) to the pipeline's ``log.jsonl``; the runner alone writes
    it."""
    import os

    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


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
                    "output": str(r.output), **({"error": r.error} if r.error else {})} for r in results],
    })


def check_only(spec: PipelineSpec, only: set[str] | None) -> None:
    if only:
        unknown = only - {s.id for s in spec.stages}
        if unknown:
            raise ConfigError(f"--only names unknown stages: {', '.join(sorted(unknown))}")
