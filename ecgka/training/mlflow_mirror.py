"""The optional MLflow mirror (``pip install 'ecgka[mlflow]'``): ecgka's folders stay the source of truth.

``MlflowHook`` mirrors a training run to ``cfg.mlflow.tracking_uri``: one MLflow run named after the run
(``mlflow.run_name``, default the config's name; a pipeline's stage id), tagged with the run folder's
path, its fingerprint (the config hash of its folder marker) and the dataset fingerprint; the resolved
config as params (:func:`flatten_params`); every epoch's metrics (step = epoch counted from 1); and when
the fit ends the best epoch's validation metrics (``best/val/<metric>``, ``best_epoch``). A resumed run
continues the MLflow run with the same path and fingerprint tags, logging only the epochs it lacks.

A mirror that fails (an unreachable server, a refused write) says so in one line on stderr and stops
mirroring: training goes on, and its folder is exactly what it would have been without the mirror.
mlflow is imported only when a tracking URI is set (it takes seconds to import).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecgka.catalog import RunDir
from ecgka.console import say
from ecgka.errors import InputError
from ecgka.training.hooks import Hook

if TYPE_CHECKING:  # annotations only
    from ecgka.training.config import TrainConfig
    from ecgka.training.loop import Trainer

TAG_RUN_PATH = "ecgka.run_path"
TAG_RUN_FINGERPRINT = "ecgka.run_fingerprint"
TAG_DATASET = "ecgka.dataset_fingerprint"
MAX_KEY, MAX_VALUE, BATCH = 250, 6000, 100  # MLflow's key and param value lengths, params per request
# a server that does not answer costs seconds, not minutes of retries (unless the user set these)
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
INSTALL = "pip install 'ecgka[mlflow]'"


def require_mlflow(what: str = "the MLflow mirror") -> None:
    """One line naming the extra when mlflow is not installed (checked without importing it)."""
    if importlib.util.find_spec("mlflow") is None:
        raise InputError(f"{what} needs the optional package mlflow ({INSTALL})")


def mlflow_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for ``tracking_uri``, its model registry at the same URI."""
    require_mlflow()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextlib.contextmanager
def quick_http() -> Iterator[None]:
    """Bounded retries and timeouts for the mirror's requests (the user's own settings win)."""
    added = {k: v for k, v in QUICK_HTTP.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def flatten_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dot keys (``optim.lr``), lists as JSON, None as ``None``; keys cut
    to 250 characters and values to 6000 (MLflow's limits)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, f"{name}."))
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        out[name[:MAX_KEY]] = text[:MAX_VALUE]
    return out


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local SQLite database (``mlartifacts/`` in its
    folder) rather than MLflow's default, ``./mlruns`` in the working directory; else the store's default."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or tracking_uri == prefix + ":memory:":
        return None
    return (Path(tracking_uri[len(prefix):]).resolve().parent / "mlartifacts").as_uri()


def experiment_id(client: Any, name: str) -> str:
    """The experiment called ``name``, created when missing (artifacts: :func:`artifact_location`)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))
    except Exception:  # made meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def find_runs(client: Any, experiment: str, tags: dict[str, str], max_results: int = 1) -> list[Any]:
    """The experiment's runs carrying every tag of ``tags``, newest first."""
    where = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    return list(client.search_runs([experiment], filter_string=where, max_results=max_results,
                                   order_by=["attributes.start_time DESC"]))


def run_tags(run: RunDir, fingerprint: str | None) -> dict[str, str]:
    """The tags that find a run folder's MLflow run: its resolved path and its fingerprint."""
    return {TAG_RUN_PATH: str(run.path.resolve()), TAG_RUN_FINGERPRINT: str(fingerprint)}


def log_metrics(client: Any, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [Metric(key, float(value), now, step) for key, value in metrics.items() if value is not None]
    for start in range(0, len(rows), BATCH):
        client.log_batch(run_id, metrics=rows[start:start + BATCH])


def log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    rows = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(rows), BATCH):
        client.log_batch(run_id, params=rows[start:start + BATCH])


def epoch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """One log.jsonl record as MLflow metrics (the TensorBoard scalars' names)."""
    return {"train/loss": record["train_loss"], "lr": record["lr"], "samples_per_s": record["samples_per_s"],
            "seconds": record["seconds"], **{f"train/{k}": v for k, v in record["train_terms"].items()},
            **{f"val/{k}": v for k, v in record["val"].items()}}


def warn_off(what: str, exc: BaseException) -> None:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    say(f"ecgka: MLflow mirror off ({what}: {first}); training goes on, the run folder is the record",
        file=sys.stderr)


class MlflowHook(Hook):
    """Mirrors the run to MLflow (module docstring); every call is guarded: the first failure warns once
    and turns the mirror off."""

    def __init__(self, cfg: TrainConfig, run: RunDir, fingerprint: str, dataset_fingerprint: str | None):
        self.cfg, self.run, self.fingerprint, self.dataset = cfg, run, fingerprint, dataset_fingerprint
        self.client: Any = None
        self.run_id: str | None = None
        self.on = True

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        if not self.on:
            return
        try:
            with quick_http():
                action()
        except Exception as exc:  # the mirror never fails training
            self.on = False
            warn_off(what, exc)

    def _start(self, trainer: Trainer) -> None:
        from ecgka.config import config_to_dict

        settings = self.cfg.mlflow
        self.client = mlflow_client(str(settings.tracking_uri))
        experiment = experiment_id(self.client, settings.experiment)
        tags = run_tags(self.run, self.fingerprint)
        found = find_runs(self.client, experiment, tags)
        if found:
            run_id = found[0].info.run_id
            logged = len(self.client.get_metric_history(run_id, "train/loss"))
            self.client.update_run(run_id, status="RUNNING")
        else:
            made = self.client.create_run(experiment, run_name=settings.run_name or self.cfg.name,
                                          tags={**tags, TAG_DATASET: str(self.dataset),
                                                "ecgka.method": self.cfg.method.name})
            run_id, logged = made.info.run_id, 0
            log_params(self.client, run_id, flatten_params(config_to_dict(self.cfg)))
        for record in trainer.history[logged:]:  # epochs a resumed run did before (or before the mirror)
            log_metrics(self.client, run_id, epoch_metrics(record), record["epoch"] + 1)
        self.run_id = run_id

    def _ensure(self, trainer: Trainer) -> None:
        if self.run_id is None:
            self._guard("connecting to " + str(self.cfg.mlflow.tracking_uri), lambda: self._start(trainer))

    def on_epoch_start(self, trainer: Trainer, epoch: int, n_batches: int) -> None:
        self._ensure(trainer)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._ensure(trainer)
        self._guard("logging metrics", lambda: log_metrics(self.client, self.run_id, epoch_metrics(record),
                                                           record["epoch"] + 1))

    def on_fit_end(self, trainer: Trainer) -> None:
        self._ensure(trainer)
        self._guard("ending the run", lambda: self._finish(trainer))

    def _finish(self, trainer: Trainer) -> None:
        best = trainer.best.get("epoch")
        record = next((r for r in trainer.history if r["epoch"] == best), None)
        if record is not None:
            log_metrics(self.client, self.run_id, {"best_epoch": best + 1,
                                                   **{f"best/val/{k}": v for k, v in record["val"].items()}},
                        trainer.epoch)
        self.client.set_terminated(self.run_id, "FINISHED")


def metric_leaves(tree: Any, prefix: str) -> dict[str, float]:
    """The numbers of a nested metrics mapping as MLflow metrics: ``<prefix>/<dot.path>``, characters MLflow
    refuses in a name replaced by ``_``, keys cut to 250 characters; lists, strings and booleans left out."""
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for key, value in tree.items():
            out.update(metric_leaves(value, f"{prefix}.{key}" if not prefix.endswith("/") else f"{prefix}{key}"))
        return out
    if isinstance(tree, bool) or not isinstance(tree, int | float):
        return {}
    return {re.sub(r"[^\w./\- ]", "_", prefix)[:MAX_KEY]: float(tree)}


def mirror_evaluation(run: RunDir, metrics: dict[str, Any], where: str) -> None:
    """``ecgka evaluate``'s metrics (``metrics.json``) into the MLflow run of ``run`` (found by its path and
    fingerprint tags) as ``<where>/<dot.path>`` (``test/regression.all.mae``), when the run's config names a
    tracking URI. A folder without its MLflow run (a registry's copy of the run) is left alone; a mirror that
    fails is one line on stderr: the evaluation stands."""
    from ecgka.config import config_hash
    from ecgka.training.config import read_resolved_config
    from ecgka.training.resume import comparable

    cfg = read_resolved_config(run.config_path)
    if not cfg.mlflow.tracking_uri:
        return
    try:
        with quick_http():
            client = mlflow_client(cfg.mlflow.tracking_uri)
            experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
            tags = run_tags(run, config_hash(comparable(cfg)))
            found = find_runs(client, experiment.experiment_id, tags) if experiment is not None else []
            if not found:  # a copy of the run (a registry version), or a run whose mirror was off
                return
            log_metrics(client, found[0].info.run_id, metric_leaves(metrics, f"{where}/"), 0)
    except Exception as exc:  # the evaluation stands: MLflow is a mirror
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        say(f"ecgka: evaluation not mirrored to MLflow ({first}); {run.path} holds it", file=sys.stderr)


def make_mlflow_hook(cfg: TrainConfig, run: RunDir, fingerprint: str,
                     dataset_fingerprint: str | None) -> MlflowHook | None:
    """The mirror's hook when ``mlflow.tracking_uri`` is set (None otherwise)."""
    if not cfg.mlflow.tracking_uri:
        return None
    return MlflowHook(cfg, run, fingerprint, dataset_fingerprint)
