"""The file names of a model registry folder, a portable model export and a comparison report.

Registry folder (plain files, readable without ecgka)::

    REG/aliases.json                 {"champion": "v0002", "challenger": "v0003"}
    REG/log.jsonl                    append-only: every registration, promotion and refusal, with reasons
    REG/archived.json                {"v0001": {"time", "reason"}}: versions kept but never served
    REG/mlflow.json                  optional: the MLflow model registry that mirrors the champion alias
    REG/versions/v0001/model.json    the version's record (run, dataset digest, config, metrics, parent, time,
                                     ``files``: the SHA-256 of every file of the version folder)
    REG/versions/v0001/run/          a frozen copy of the run: a run folder of its own (config.yaml, run.json,
                                     checkpoints/best.pt = the registered checkpoint, eval/test/)
    REG/versions/v0001/export/       its portable model (an export folder)

A version folder is built as a hidden temporary sibling (``versions/.v0001.tmp-*``) and renamed into place:
only folders named ``vNNNN`` are versions.

Export folder (``ecgka export``)::

    OUT/model.ts (TorchScript) or OUT/model.onnx   OUT/card.json
    OUT/mlflow/                      --format mlflow: also an MLflow pyfunc model (MLmodel, model.ts, card.json
                                     and signal.json, the build's signal settings, as its artifacts)

Comparison folder (``compare`` stage)::

    OUT/comparison.md  OUT/comparison.csv  OUT/comparison.json  OUT/gate.json
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ecgka.catalog._files import _read_json_file


class ExportDir:
    """A portable model: the model file and its JSON card."""

    CARD = "card.json"
    MODEL_FILES = {"torchscript": "model.ts", "onnx": "model.onnx", "mlflow": "model.ts"}  # mlflow: + MLFLOW/
    MLFLOW = "mlflow"  # the MLflow pyfunc model folder of an ``--format mlflow`` export
    SIGNAL = "signal.json"  # an MLflow artifact: the build's signal settings (reader, QC, cleaning)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def card_path(self) -> Path:
        return self.path / self.CARD

    def model_path(self, fmt: str) -> Path:
        return self.path / self.MODEL_FILES[fmt]

    @property
    def mlflow_dir(self) -> Path:
        return self.path / self.MLFLOW

    def read_card(self) -> dict[str, Any]:
        return _read_json_file(self.card_path, "card.json", "write it with `ecgka export`")


class RegistryDir:
    """A model registry folder."""

    ALIASES = "aliases.json"
    ARCHIVED = "archived.json"
    MLFLOW = "mlflow.json"  # optional: {"tracking_uri", "model_name", ...} (ecgka.release.mlflow_export)
    LOG = "log.jsonl"
    VERSIONS = "versions"
    MODEL = "model.json"
    EXPORT = "export"
    RUN = "run"
    VERSION_PATTERN = re.compile(r"v(\d{4,})")

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RegistryDir({str(self.path)!r})"

    @property
    def aliases_path(self) -> Path:
        return self.path / self.ALIASES

    @property
    def archived_path(self) -> Path:
        return self.path / self.ARCHIVED

    @property
    def mlflow_path(self) -> Path:
        return self.path / self.MLFLOW

    @property
    def log_path(self) -> Path:
        return self.path / self.LOG

    @property
    def versions_dir(self) -> Path:
        return self.path / self.VERSIONS

    @staticmethod
    def version_name(number: int) -> str:
        return f"v{number:04d}"

    def version_dir(self, name: str) -> Path:
        return self.versions_dir / name

    def model_json(self, name: str) -> Path:
        return self.version_dir(name) / self.MODEL

    def export_dir(self, name: str) -> ExportDir:
        return ExportDir(self.version_dir(name) / self.EXPORT)

    def run_dir(self, name: str) -> Path:
        """The version's frozen copy of its run folder."""
        return self.version_dir(name) / self.RUN

    @classmethod
    def version_number(cls, name: str) -> int | None:
        match = cls.VERSION_PATTERN.fullmatch(name)
        return int(match.group(1)) if match else None

    def version_names(self) -> list[str]:
        """Registered versions (folders ``vNNNN`` with a model.json), oldest first."""
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir()
                 if self.version_number(p.name) is not None and (p / self.MODEL).is_file()]
        return sorted(names, key=lambda n: self.version_number(n) or 0)

    def next_version_name(self) -> str:
        """One past the highest ``vNNNN`` folder (with or without a model.json)."""
        numbers = [self.version_number(p.name) for p in self.versions_dir.iterdir()] \
            if self.versions_dir.is_dir() else []
        return self.version_name(max([n for n in numbers if n is not None], default=0) + 1)

    def read_model(self, name: str) -> dict[str, Any]:
        return _read_json_file(self.model_json(name), "model.json", "a broken registry version; restore it from "
                                                                     "a backup")

    def is_registry(self) -> bool:
        return self.versions_dir.is_dir() or self.aliases_path.is_file()

    def read_aliases(self) -> dict[str, str]:
        if not self.aliases_path.is_file():
            return {}
        return _read_json_file(self.aliases_path, "aliases.json", "restore it from a backup")

    def read_archived(self) -> dict[str, Any]:
        if not self.archived_path.is_file():
            return {}
        return _read_json_file(self.archived_path, "archived.json", "restore it from a backup")


class ComparisonDir:
    """A champion-versus-challenger comparison report."""

    MARKDOWN = "comparison.md"
    CSV = "comparison.csv"
    JSON = "comparison.json"
    GATE = "gate.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def markdown(self) -> Path:
        return self.path / self.MARKDOWN

    @property
    def csv(self) -> Path:
        return self.path / self.CSV

    @property
    def json(self) -> Path:
        return self.path / self.JSON

    @property
    def gate(self) -> Path:
        return self.path / self.GATE
