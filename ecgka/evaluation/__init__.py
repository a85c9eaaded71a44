"""Evaluation of a trained run: predictions of a split and its few-shot and clinical metrics."""

from ecgka.evaluation.evaluate import EvalConfig, compute_metrics, evaluate_run, read_manifest

__all__ = ["EvalConfig", "compute_metrics", "evaluate_run", "read_manifest"]
