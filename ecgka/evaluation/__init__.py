"""Evaluation of a trained run: predictions of a split and its few-shot and clinical metrics."""

from ecgka.evaluation.evaluate import EvalConfig, compute_metrics, evaluate_run

__all__ = ["EvalConfig", "compute_metrics", "evaluate_run"]
