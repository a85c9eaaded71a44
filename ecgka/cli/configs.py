"""``ecgka configs [KIND] [--paths]``: the shipped configs (by kind) and pipelines, usable by name anywhere."""

from __future__ import annotations

from ecgka.cli.options import Command, ConfigsOptions

USE = {"train": "ecgka train --config NAME", "data": "ecgka build --config NAME",
       "gate": "ecgka registry promote --gate NAME", "model": "documents a preset: model.preset=NAME"}


def _lines(heading: str, names: list[str], folder, paths: bool) -> list[str]:
    lines = [heading]
    for name in names:
        lines.append(f"  {name}" + (f"  {folder / (name + '.yaml')}" if paths else ""))
    return lines


def run(o: ConfigsOptions) -> int:
    from ecgka.resources import CONFIGS, PIPELINES, shipped_configs, shipped_pipelines

    lines: list[str] = []
    for kind, names in shipped_configs(o.kind).items():
        lines += _lines(f"{kind} configs ({USE[kind]}):", names, CONFIGS / kind, o.paths)
    if o.kind is None:
        lines += _lines("pipelines (ecgka run NAME):", shipped_pipelines(), PIPELINES, o.paths)
    print("\n".join(lines))
    return 0


COMMAND = Command(ConfigsOptions, run)
