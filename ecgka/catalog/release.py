"""The file names of a model registry folder, a portable model export and a comparison report.

Registry folder (plain files, readable without ecgka)::

    REG/aliases.json                 {"champion": "v0002", "challenger": "v0003"}
    REG/log.jsonl                    append-only: every registration, promotion and refusal, with reasons
    REG/versions/v0001/model.json    the version's record (run, dataset digest, config, metrics, parent, time)
    REG/versions/v0001/export/       its portable model (an export folder)

Export folder (``ecgka export``)::

    OUT/model.ts (TorchScript) or OUT/model.onnx   OUT/card.json

Comparison folder (``compare`` stage)::

    OUT/comparison.md  OUT/comparison.csv  OUT/comparison.json  OUT/gate.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgka.catalog._files import _read_json_file


class ExportDir:
    """A portable model: the model file and its JSON card."""

    CARD = "card.json"
    MODEL_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def card_path(self) -> Path:
        return self.path / self.CARD

    def model_path(self, fmt: str) -> Path:
        return self.path / self.MODEL_FILES[fmt]

    def read_card(self) -> dict[str, Any]:
        return _read_json_file(self.card_path, "card.json", "write it with `ecgka export`")


class RegistryDir:
    """A model registry folder."""

    ALIASES = "aliases.json"
    LOG = "log.jsonl"
    VERSIONS = "versions"
    MODEL = "model.json"
    EXPORT = "export"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RegistryDir({str(self.path)!r})"

    @property
    def aliases_path(self) -> Path:
        return self.path / self.ALIASES

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

    def version_names(self) -> list[str]:
        """Registered versions (those with a model.json), oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / self.MODEL).is_file())

    def is_registry(self) -> bool:
        return self.versions_dir.is_dir() or self.aliases_path.is_file()


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
