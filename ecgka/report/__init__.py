"""The clinical report: ``write_report(run_dirs, out_dir)`` (HTML + Markdown + CSV tables + metrics.json)."""

from ecgka.report.build import write_report
from ecgka.report.collect import ReportModel, RunEntry, collect, load_run
from ecgka.report.privacy import check_directory, find_leaks

__all__ = ["ReportModel", "RunEntry", "check_directory", "collect", "find_leaks", "load_run", "write_report"]
