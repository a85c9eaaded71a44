"""The configs and pipelines that ship with ecgka (package data), and the one resolver of their names.

``configs/<kind>/...yaml`` (kinds: train, data, gate, model) and ``pipelines/NAME.yaml`` live here, inside the
package, so they are found from any folder (the repository keeps ``configs`` and ``pipelines`` as links to
them). A command's ``--config`` and a pipeline stage's path options take a file path, which wins when it
names a file, or a shipped name: ``vanilla`` (``configs/train/vanilla.yaml``), ``age/dist_loss``,
``configs/train/vanilla.yaml`` from outside the repository, ``retrain`` for ``ecgka run``.
``ecgka configs`` and ``ecgka run --list`` list what ships.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from ecgka.errors import ConfigError

RESOURCES = Path(__file__).resolve().parent
CONFIGS = RESOURCES / "configs"
PIPELINES = RESOURCES / "pipelines"
CONFIG_KINDS = ("train", "data", "gate", "model")
SUFFIXES = (".yaml", ".yml")


def _names(folder: Path) -> list[str]:
    """The YAML files under ``folder`` as names (relative, without the suffix); ``_``-files (bases to
    extend, e.g. ``_paper``) are left out."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in files if not p.name.startswith("_"))


def shipped_configs(kind: str | None = None) -> dict[str, list[str]]:
    """kind -> the shipped config names of that kind (every kind, or only ``kind``)."""
    return {k: _names(CONFIGS / k) for k in ([kind] if kind else CONFIG_KINDS)}


def shipped_pipelines() -> list[str]:
    return _names(PIPELINES)


def _yaml(name: str) -> str:
    return name if name.endswith(SUFFIXES) else name + ".yaml"


def _not_found(text: str, what: str, names: list[str], lister: str) -> ConfigError:
    close = difflib.get_close_matches(text, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"{text}: no such file, nor a shipped {what}{hint} (`{lister}` lists them)")


def _shipped(text: str, root: Path, prefixes: tuple[str, ...]) -> Path | None:
    """The shipped file ``text`` names under ``root``, with any of ``prefixes`` (``configs/train/``) dropped."""
    for prefix in prefixes:
        if text.startswith(prefix):
            candidate = (root / _yaml(text[len(prefix):])).resolve()
            if candidate.is_file() and candidate.is_relative_to(RESOURCES):
                return candidate
    return None


def find_config(name_or_path: str | Path, kind: str) -> Path:
    """A config file: ``name_or_path`` itself when it is a file, else the shipped config of ``kind`` it
    names (``vanilla``, ``age/dist_loss``, ``configs/train/vanilla.yaml``); a one-line ConfigError otherwise."""
    if kind not in CONFIG_KINDS:
        raise ConfigError(f"unknown config kind {kind!r} (valid: {', '.join(CONFIG_KINDS)})")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    text = str(name_or_path).replace("\\", "/")
    found = _shipped(text, CONFIGS / kind, (f"configs/{kind}/", f"{kind}/", ""))
    if found is None:
        raise _not_found(text, f"{kind} config", shipped_configs(kind)[kind], "ecgka configs")
    return found


def find_pipeline(name_or_path: str | Path) -> Path:
    """A pipeline file: ``name_or_path`` itself when it is a file, else the shipped pipeline it names
    (``retrain``, ``pipelines/retrain.yaml``); a one-line ConfigError otherwise."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    text = str(name_or_path).replace("\\", "/")
    found = _shipped(text, PIPELINES, ("pipelines/", ""))
    if found is None:
        raise _not_found(text, "pipeline", shipped_pipelines(), "ecgka run --list")
    return found


def shipped_file(value: str) -> Path | None:
    """The shipped file a relative path names when it does not exist from the working directory
    (``configs/gate/default.yaml``, ``pipelines/smoke.yaml``); None otherwise. Pipeline stages use it for
    every path option, so a shipped pipeline runs from any folder."""
    if not isinstance(value, str) or Path(value).is_absolute() or Path(value).exists():
        return None
    text = value.replace("\\", "/")
    return _shipped(text, CONFIGS, ("configs/",)) or _shipped(text, PIPELINES, ("pipelines/",))
