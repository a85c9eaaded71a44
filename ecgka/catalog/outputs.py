"""The report folder (``ReportDir``) and the pipeline folder (``PipelineDir``)."""

from __future__ import annotations

from pathlib import Path


class ReportDir:
    """A report folder."""

    HTML = "report.html"
    MARKDOWN = "report.md"
    METRICS = "metrics.json"
    TABLES = "tables"
    TIDY = "tidy"  # tidy snake_case CSVs, one observation per row, next to the display tables
    FIGURES = "figures"
    TRIPOD_JSON = "tripod_ai.json"  # the TRIPOD+AI appendix, linked from the page's navigation
    TRIPOD_HTML = "tripod_ai.html"
    DATASETS = "datasets"  # a report grouped by dataset: datasets/<fingerprint>/ holds one report each

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def dataset_report(self, fingerprint: str) -> ReportDir:
        return ReportDir(self.path / self.DATASETS / fingerprint)

    @property
    def html(self) -> Path:
        return self.path / self.HTML

    @property
    def markdown(self) -> Path:
        return self.path / self.MARKDOWN

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    def table(self, name: str) -> Path:
        return self.path / self.TABLES / f"{name}.csv"

    def tidy_table(self, name: str) -> Path:
        return self.path / self.TABLES / self.TIDY / f"{name}.csv"

    def figure(self, name: str) -> Path:
        return self.path / self.FIGURES / f"{name}.png"


class PipelineDir:
    """The output folder of ``ecgka run``: one folder per stage, completion markers, a summary."""

    MARKERS = ".pipeline"
    SUMMARY = "pipeline.json"
    LOG = "log.jsonl"  # one JSON line per stage that ran (``ecgka run --status``)
    CONSOLE_SUFFIX = ".log"  # a stage process's console output, beside its marker (parallel runs)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def markers_dir(self) -> Path:
        return self.path / self.MARKERS

    def marker(self, stage_id: str) -> Path:
        return self.markers_dir / f"{stage_id}.json"

    def stage_dir(self, stage_id: str) -> Path:
        return self.path / stage_id

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def log(self) -> Path:
        return self.path / self.LOG

    def console(self, stage_id: str) -> Path:
        return self.markers_dir / f"{stage_id}{self.CONSOLE_SUFFIX}"
