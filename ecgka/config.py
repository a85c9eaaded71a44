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
from pydantic import BaseModel, ConfigDict, ValidationError

from ecgka.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class ConfigModel(BaseModel):
    """Base of every config: unknown keys are errors; values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or non-mapping content is a one-line ConfigError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
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


def _model_at(model_cls: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The config model found by following ``path`` (field names) from ``model_cls``, if any."""
    current: Any = model_cls
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return current


def _message(model_cls: type[BaseModel], error: dict) -> str:
    """One error as ``key: problem``; an unknown key also lists the valid keys of its section."""
    loc = tuple(error["loc"])
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        section = _model_at(model_cls, loc[:-1])
        valid = f" (valid: {', '.join(section.model_fields)})" if section is not None else ""
        msg = f"unknown key {loc[-1]!r}{valid}"
    elif error["type"] == "literal_error":
        valid = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        close = difflib.get_close_matches(str(error.get("input")), valid, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        msg = f"unknown value {error.get('input')!r}{hint} (valid: {', '.join(valid)})"
    where = ".".join(str(p) for p in loc)
    return f"{where}: {msg}" if where else msg


def validate_config(model_cls: type[M], data: dict[str, Any], source: str = "config") -> M:
    """Validate a mapping into ``model_cls``; errors become one line naming the key and the problem."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_message(model_cls, exc.errors()[0])}{more}") from None


def load_config(model_cls: type[M], path: str | Path | None = None, overrides: Iterable[str] = ()) -> M:
    """Load ``path`` (or the model's defaults), apply overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return validate_config(model_cls, data, source=str(path) if path else "config")


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def config_hash(cfg: BaseModel | dict[str, Any]) -> str:
    """A stable short hash of a config (or any JSON-able mapping)."""
    data = config_to_dict(cfg) if isinstance(cfg, BaseModel) else cfg
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
