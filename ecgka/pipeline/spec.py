"""Pipeline files (``pipelines/NAME.yaml``): stages, their configs and how outputs feed inputs.

A pipeline is a list of stages. Each stage has an ``id`` (its output goes to ``OUT/<id>``), a ``kind``
(synth, build, train, evaluate, report) and the kind's options. Strings may reference

- ``${stage_id}``: the output directory of an earlier stage;
- ``${vars.name}``: a pipeline variable (``vars:`` in the file, ``--set name=value`` on the CLI),
  e.g. the paths of a real MIMIC copy. A variable left ``null`` must be set; one left ``""`` is optional:
  an option whose whole value is that reference is then unset (``d_labitems: ${vars.d_labitems}``).

Stages run in file order, so ``${stage_id}`` must name an earlier stage: a later one is reported as a
forward reference (or as a cycle when that stage reads this one back).

``foreach: {method: [lds, fds]}`` expands one entry into one stage per value (cartesian product over
several keys), substituting ``{method}`` in every string of the entry, ``id`` included.

``mlflow: {tracking_uri: URI, experiment: NAME}`` mirrors every training stage (``train``, ``challenger``)
to MLflow, each as a run named after the stage id (``mlflow.*`` overrides put before the stage's own, which
win); the mirror is left out of the stages' fingerprints (docs/training.md, "MLflow mirror").
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from ecgka.config import ConfigModel, read_yaml, validate_config
from ecgka.errors import ConfigError
from ecgka.names import look_up_option
from ecgka.resources import find_config, shipped_file

_REF = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


class StageSpec(ConfigModel):
    """One stage after ``foreach`` expansion; ``options`` are the kind's own keys."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: str
    options: dict[str, Any] = {}


class MlflowMirror(ConfigModel):
    """A pipeline's ``mlflow:`` block: where its training stages are mirrored."""

    tracking_uri: str
    experiment: str = "ecgka"


class PipelineSpec(ConfigModel):
    name: str
    description: str = ""
    vars: dict[str, Any] = {}
    mlflow: MlflowMirror | None = None
    stages: list[StageSpec]


MIRRORED_KINDS = ("train", "challenger")  # the stage kinds that train (``mlflow.*`` overrides)


def mirror_overrides(mirror: MlflowMirror, stage_id: str) -> list[str]:
    """The ``mlflow.*`` overrides a pipeline's ``mlflow:`` block gives a training stage (values quoted: the
    overrides are read as YAML)."""
    return [f"mlflow.tracking_uri={json.dumps(mirror.tracking_uri)}", f"mlflow.experiment={json.dumps(mirror.experiment)}",
            f"mlflow.run_name={json.dumps(stage_id)}"]


def _apply_mirror(spec: PipelineSpec) -> PipelineSpec:
    if spec.mlflow is None:
        return spec
    for stage in spec.stages:
        if stage.kind in MIRRORED_KINDS:
            own = stage.options.get("overrides") or []
            if not isinstance(own, list):  # refused by the stage's options, as written
                continue
            stage.options = {**stage.options, "overrides": [*mirror_overrides(spec.mlflow, stage.id), *own]}
    return spec


def _substitute(value: Any, mapping: dict[str, str]) -> Any:
    """Replace ``{key}`` placeholders (foreach values) in every string of a nested structure."""
    if isinstance(value, str):
        for key, replacement in mapping.items():
            value = value.replace("{" + key + "}", str(replacement))
        return value
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, mapping): _substitute(v, mapping) for k, v in value.items()}
    return value


def expand_foreach(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One raw stage entry -> the stages it stands for (itself when it has no ``foreach``)."""
    entry = dict(entry)
    loops = entry.pop("foreach", None)
    if not loops:
        return [entry]
    if not isinstance(loops, dict) or not all(isinstance(v, list) and v for v in loops.values()):
        raise ConfigError(f"stage {entry.get('id')!r}: foreach must map names to non-empty lists")
    keys = list(loops)
    return [_substitute(entry, dict(zip(keys, combo, strict=True))) for combo in itertools.product(*loops.values())]


def _to_stage(raw: dict[str, Any], source: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or "id" not in raw or "kind" not in raw:
        raise ConfigError(f"{source}: every stage needs an 'id' and a 'kind' (got {raw!r})")
    options = {k: v for k, v in raw.items() if k not in {"id", "kind"}}
    return {"id": str(raw["id"]), "kind": raw["kind"], "options": options}


def load_pipeline(path: str | Path, set_vars: dict[str, Any] | None = None) -> PipelineSpec:
    """Read a pipeline file, expand ``foreach``, apply ``--set`` variables, check ids are unique."""
    data = read_yaml(path)
    data.setdefault("name", Path(path).stem)
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ConfigError(f"{path}: 'stages' must be a non-empty list")
    stages = [_to_stage(s, str(path)) for entry in raw_stages for s in expand_foreach(entry)]
    data["stages"] = stages
    declared = data.get("vars") or {}
    if not isinstance(declared, dict):
        raise ConfigError(f"{path}: 'vars' must map names to values")
    _check_set_vars(set_vars or {}, declared, path)
    data["vars"] = {**declared, **(set_vars or {})}
    spec = validate_config(PipelineSpec, data, source=str(path))
    seen: set[str] = set()
    for stage in spec.stages:
        if stage.id in seen:
            raise ConfigError(f"{path}: stage id {stage.id!r} appears twice")
        seen.add(stage.id)
    return _apply_mirror(spec)


def _check_set_vars(set_vars: dict[str, Any], declared: dict[str, Any], path: str | Path) -> None:
    """Every ``--set`` names a variable the file declares (a typo would otherwise be ignored)."""
    for name in set_vars:
        if name in declared:
            continue
        close = difflib.get_close_matches(name, list(declared), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        names = ", ".join(declared) if declared else "none"
        raise ConfigError(f"--set {name}: {path} declares no variable {name!r}{hint} (declared: {names})")


PROJECT_FILE_OPTIONS = ("config", "gate")  # relative paths also taken from the pipeline's project folder
# a bare name in these options is a shipped config of these kinds (``config: vanilla``, ``gate: default``)
NAMED_CONFIG_KINDS = {"config": ("train", "data"), "gate": ("gate",)}


def _file_path(value: Any, key: str, base: Path) -> Any:
    if isinstance(value, list):
        return [_file_path(v, key, base) for v in value]
    if not isinstance(value, str) or not value or Path(value).is_absolute() or Path(value).exists():
        return value
    if key in PROJECT_FILE_OPTIONS and (base / value).exists():
        return str(base / value)
    shipped = shipped_file(value)  # configs/..., pipelines/...: the package's copy, from any folder
    if shipped is None:
        shipped = _named_config(value, NAMED_CONFIG_KINDS.get(key, ()))
    return str(shipped) if shipped is not None else value


def _named_config(name: str, kinds: tuple[str, ...]) -> Path | None:
    """The shipped config a bare name stands for (``vanilla``, ``age/released/agedb/conr``), if any."""
    for kind in kinds:
        try:
            return find_config(name, kind)
        except ConfigError:
            continue
    return None


def resolve_files(options: dict[str, Any], base: Path) -> dict[str, Any]:
    """A stage's file options after ``${...}`` substitution: a relative path that names nothing from the
    working directory is taken from the project folder (``config``, ``gate``: ``base``, the folder above
    the pipeline file's), else from the shipped files when it names one (``configs/gate/default.yaml``:
    ``ecgka.resources``), and a bare ``config:``/``gate:`` name is a shipped config (``vanilla``), so a
    shipped pipeline runs from any folder and the fingerprint hashes the file it found. Anything else is
    left as written."""
    return {key: _file_path(value, key, base) for key, value in options.items()}


def references(value: Any) -> set[str]:
    """The ``${...}`` names a (nested) option value refers to."""
    if isinstance(value, str):
        return set(_REF.findall(value))
    if isinstance(value, list):
        return set().union(*(references(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(references(v) for v in value.values())) if value else set()
    return set()


class Order:
    """Which stages a reference may name: every stage's id in file order and the stages it reads."""

    def __init__(self, stages: list[StageSpec]):
        self.reads = {s.id: {r for r in references(s.options) if not r.startswith("vars.")} for s in stages}

    def reads_back(self, start: str, target: str) -> list[str] | None:
        """A chain of references from ``start`` back to ``target`` (a cycle), if there is one."""
        todo, came_from = [start], {start: start}
        while todo:
            current = todo.pop()
            if current == target:
                chain = [current]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return chain[::-1]
            for nxt in sorted(self.reads.get(current, ())):
                if nxt not in came_from:
                    came_from[nxt] = current
                    todo.append(nxt)
        return None

    def problem(self, name: str, stage_id: str) -> str:
        """Why ``${name}`` in stage ``stage_id`` names no earlier stage: a cycle, a forward reference, a typo."""
        if name == stage_id:
            return f"${{{name}}} is a cycle: stage {name!r} reads its own output"
        if name in self.reads:
            chain = self.reads_back(name, stage_id)
            if chain:
                return f"${{{name}}} is a cycle: {' -> '.join([stage_id, *chain])}"
            return (f"${{{name}}} is a forward reference: stage {name!r} comes later, and stages run in "
                    f"file order (move {name!r} above {stage_id!r})")
        try:
            look_up_option(name, list(self.reads), "stage")
        except ConfigError as exc:
            return f"${{{name}}} names no earlier stage ({exc})"
        return f"${{{name}}} names no earlier stage"


def resolve(value: Any, outputs: dict[str, Path], variables: dict[str, Any], where: str,
            order: Order | None = None, stage_id: str = "") -> Any:
    """Replace ``${stage}`` by that stage's output path and ``${vars.x}`` by the variable's value.

    A value that is exactly one reference to an optional variable left empty (``""``) becomes None.
    """
    if isinstance(value, list):
        return [resolve(v, outputs, variables, where, order, stage_id) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, outputs, variables, where, order, stage_id) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    whole = _REF.fullmatch(value.strip())
    if whole and whole.group(1).startswith("vars.") and variables.get(whole.group(1)[5:], None) == "":
        return None

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("vars."):
            key = name[len("vars.") :]
            if key not in variables:
                raise ConfigError(f"{where}: variable {key!r} is not declared (add it under 'vars:')")
            if variables[key] in (None, ""):
                raise ConfigError(f"{where}: variable {key!r} is not set (use --set {key}=VALUE)")
            return str(variables[key])
        if name not in outputs:
            problem = order.problem(name, stage_id) if order else f"${{{name}}} names no earlier stage"
            raise ConfigError(f"{where}: {problem}")
        return str(outputs[name])

    return _REF.sub(lookup, value)
