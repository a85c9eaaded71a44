"""Typed configs loaded from YAML, with ``key=value`` overrides from the command line.

Every stage has one pydantic model (``extra="forbid"``: a misspelt key is an error, not a silent default).
The resolved config is saved beside every output, and its hash decides whether a stage must re-run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from ecgka.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _is_number_type(annotation: Any) -> bool:
    """int or float, alone or with None (``int | None``); not a type that also takes a boolean."""
    args = typing.get_args(annotation)
    if args and bool not in args:
        return any(_is_number_type(a) for a in args if a is not type(None)) and all(
            a is type(None) or _is_number_type(a) for a in args)
    return annotation in (int, float)


class ConfigModel(BaseModel):
    """Base of every config: unknown keys are errors; values are validated on assignment too. A boolean is
    never a number (YAML 1.1 reads ``epochs: yes`` as true, which pydantic would take for 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before", check_fields=False)
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and _is_number_type(field.annotation):
                raise ValueError(f"expected a number, got the boolean {str(value).lower()} (YAML reads yes/no/on/off "
                                 "as booleans)")
        return value


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that names a key twice (PyYAML would keep the last value silently)."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark):
        super().__init__(f"line {again.line + 1}: duplicate key {key!r} (first at line {first.line + 1})")


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first is not key_node.start_mark:
                raise DuplicateKeyError(key, first, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse YAML with :class:`StrictLoader` (duplicate keys are errors)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, a duplicate key or non-mapping content is a one-line ConfigError."""
    path = Path(path)
    try:
        data = load_yaml_text(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's problem with its line and column (1-based, as PyYAML prints them) and its context."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        problem += f"; {context} started at line {context_mark.line + 1}, column {context_mark.column + 1}"
    if mark is None:
        return f"not valid YAML ({problem})"
    return f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML ({problem})"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        value = load_yaml_text(raw) if raw.strip() else None
    except DuplicateKeyError as exc:
        raise ConfigError(f"override {text!r}: {str(exc).split(': ', 1)[-1]}") from None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted ``key=value`` overrides applied."""
    result = json.loads(json.dumps(data, default=str))
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
    return result


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config model inside a field's annotation (``Model``, ``Model | None``), if any."""
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _model_at(model_cls: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The config model found by following ``path`` (field names) from ``model_cls``, if any."""
    current: Any = model_cls
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        current = _nested_model(field.annotation)
    return current


def dotted_keys(model_cls: type[BaseModel], prefix: str = "", depth: int = 4) -> list[str]:
    """Every key of a config model, nested sections spelt with dots (``optim.lr``)."""
    keys: list[str] = []
    for name, field in model_cls.model_fields.items():
        keys.append(prefix + name)
        nested = _nested_model(field.annotation)
        if nested is not None and depth > 0:
            keys += dotted_keys(nested, f"{prefix}{name}.", depth - 1)
    return keys


def nearest_keys(model_cls: type[BaseModel], typed: str, n: int = 3) -> list[str]:
    """The keys of the whole model closest to a mistyped dotted key, compared by their last part.

    ``batchsize`` -> ``batch_size``; ``lr`` -> ``optim.lr`` (a key typed at the wrong level); an undotted
    key is also compared with whole dotted keys (``optim_lr`` -> ``optim.lr``).
    """
    leaf = typed.rsplit(".", 1)[-1]

    def score(key: str) -> float:
        value = difflib.SequenceMatcher(None, leaf, key.rsplit(".", 1)[-1]).ratio()
        return value if "." in typed else max(value, difflib.SequenceMatcher(None, typed, key).ratio())

    ranked = sorted(((score(k), k) for k in dotted_keys(model_cls) if k != typed), key=lambda t: -t[0])
    best = ranked[0][0] if ranked else 0.0
    return [key for value, key in ranked[:n] if value >= max(0.75, best - 0.1)]


def _message(model_cls: type[BaseModel], error: dict, skip: tuple = ()) -> str:
    """One error as ``key: problem`` (the key left out when it is ``skip``, the key the user typed);
    an unknown key names the nearest keys, else the valid ones."""
    loc = tuple(error["loc"])
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        close = nearest_keys(model_cls, ".".join(str(p) for p in loc))
        section = _model_at(model_cls, loc[:-1])
        if close:
            msg = f"unknown key {loc[-1]!r}; did you mean {', '.join(repr(c) for c in close)}?"
        else:
            valid = f" (valid: {', '.join(section.model_fields)})" if section is not None else ""
            msg = f"unknown key {loc[-1]!r}{valid}"
    elif error["type"] == "literal_error":
        valid = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        close = difflib.get_close_matches(str(error.get("input")), valid, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        msg = f"unknown value {error.get('input')!r}{hint} (valid: {', '.join(valid)})"
    where = ".".join(str(p) for p in loc) if loc != skip else ""
    return f"{where}: {msg}" if where else msg


def validate_config(model_cls: type[M], data: dict[str, Any], source: str = "config") -> M:
    """Validate a mapping into ``model_cls``; errors become one line naming the key and the problem."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_message(model_cls, exc.errors()[0])}{more}") from None


def _blame(model_cls: type[BaseModel], data: dict[str, Any], loc: tuple, overrides: list[str]) -> tuple[str, tuple] | None:
    """Which override an error is about, as (its text, its key): the one that set the key (or a section
    holding it); for an error about a section or the whole config, the overrides below it when the file
    alone is valid. None: the file's error."""
    for text in reversed(overrides):
        keys = tuple(parse_override(text)[0])
        if loc[: len(keys)] == keys:
            return text, keys
    if not overrides or not _valid(model_cls, data):
        return None
    below = [text for text in overrides if tuple(parse_override(text)[0])[: len(loc)] == loc]
    return " ".join(below or overrides), ()


def load_validated(model_cls: type[M], data: dict[str, Any], overrides: Iterable[str] = (),
                   source: str = "config", override_source: str = "command line") -> M:
    """Apply ``key=value`` overrides to ``data`` (read from ``source``) and validate the result.

    An error about a key an override set names the override (``command line: batchsize=3: unknown key
    'batchsize'; did you mean 'batch_size'?``); any other error names ``source``, the file.
    """
    overrides = list(overrides)
    try:
        return model_cls.model_validate(apply_overrides(data, overrides))
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        culprit = _blame(model_cls, data, tuple(first["loc"]), overrides)
        where = source if culprit is None else f"{override_source}: {culprit[0]}"
        raise ConfigError(f"{where}: {_message(model_cls, first, culprit[1] if culprit else ())}{more}") from None


def _valid(model_cls: type[BaseModel], data: dict[str, Any]) -> bool:
    try:
        model_cls.model_validate(data)
    except ValidationError:
        return False
    return True


def load_config(model_cls: type[M], path: str | Path | None = None, overrides: Iterable[str] = (),
                override_source: str = "command line") -> M:
    """Load ``path`` (or the model's defaults), apply overrides, validate (errors name their source)."""
    data = read_yaml(path) if path is not None else {}
    return load_validated(model_cls, data, overrides, str(path) if path else "config", override_source)


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def config_hash(cfg: BaseModel | dict[str, Any]) -> str:
    """A stable short hash of a config (or any JSON-able mapping)."""
    data = config_to_dict(cfg) if isinstance(cfg, BaseModel) else cfg
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
