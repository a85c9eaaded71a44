"""MLflow as an optional mirror of ecgka's releases (``pip install 'ecgka[mlflow]'``; docs/training.md,
"MLflow mirror").

``ecgka export RUN --format mlflow --out OUT`` writes the TorchScript export (``OUT/model.ts``,
``OUT/card.json``) and ``OUT/mlflow/``, an MLflow pyfunc model holding both plus the build's signal
settings as artifacts. Its ``predict(records, params={"ecg_root": DIR})`` takes ``ecgka predict``'s record
table (subject_id, study_id, path relative to ``ecg_root``) and returns exactly ``ecgka predict``'s table
(it calls the same ``score_records``), one row per input row.

A registry with ``REG/mlflow.json`` (:func:`configure_mlflow`) mirrors its champion: each promotion
registers the new champion's export as a version of the MLflow model (once per ecgka version, tagged with
it) and points the MLflow alias ``champion`` at it. The ecgka registry stays the record: a mirror that
fails warns in one line and the promotion stands.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ecgka.catalog import ExportDir, RegistryDir
from ecgka.console import say
from ecgka.errors import InputError
from ecgka.io import atomic_write_json
from ecgka.training.mlflow_mirror import (
    experiment_id,
    mlflow_client,
    quick_http,
    require_mlflow,
)

TAG_VERSION, TAG_REGISTRY, TAG_SHA = "ecgka.version", "ecgka.registry", "ecgka.checkpoint_sha256"
CHAMPION = "champion"


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from ecgka.release.mlflow_pyfunc import PARAMS

    inputs = Schema([ColSpec("long", "subject_id"), ColSpec("long", "study_id"), ColSpec("string", "path")])
    return ModelSignature(inputs=inputs, params=ParamSchema([ParamSpec(n, t, d) for n, (t, d) in PARAMS.items()]))


def _requirements() -> list[str]:
    """Stated, not inferred (inference loads the model in a subprocess: seconds for nothing)."""
    import mlflow
    import torch

    from ecgka import __version__

    return [f"ecgka=={__version__}", f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]


def save_pyfunc(export: ExportDir, target: Path | None = None) -> Path:
    """Write ``export`` (model.ts and card.json) as an MLflow pyfunc model into ``target`` (default
    ``export.mlflow_dir``), replacing it; built beside it and renamed into place."""
    require_mlflow("--format mlflow")
    import mlflow.pyfunc

    from ecgka.release.mlflow_pyfunc import EcgkaPyfunc
    from ecgka.release.scoring import signal_config

    card = export.read_card()
    target = Path(target or export.mlflow_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.tmp-", dir=target.parent) as tmp:
        signal = Path(tmp) / ExportDir.SIGNAL
        atomic_write_json(signal, signal_config(card).model_dump(mode="json"))
        built = Path(tmp) / target.name
        with warnings.catch_warnings():  # MLflow's advice on type hints and input examples: not the user's
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(str(built), python_model=EcgkaPyfunc(), signature=_signature(),
                                     artifacts={"model": str(export.model_path("torchscript")),
                                                "card": str(export.card_path), "signal": str(signal)},
                                     pip_requirements=_requirements())
        if target.exists():
            shutil.rmtree(target)
        built.rename(target)
    return target


# ---- the champion alias in an MLflow model registry ------------------------------------------------------------


def configure_mlflow(registry: str | Path, tracking_uri: str, model_name: str = "ecgka",
                     experiment: str = "ecgka-registry") -> dict[str, Any]:
    """Write ``REG/mlflow.json``: promotions of this registry set the ``champion`` alias of ``model_name`` in
    the MLflow model registry at ``tracking_uri`` (its versions' runs go to ``experiment``)."""
    from ecgka.release.registry import ModelRegistry

    require_mlflow("an MLflow registry")
    reg = ModelRegistry(registry)
    if not reg.dir.is_registry():
        raise InputError(f"{registry}: not a model registry (register a version first: `ecgka registry register`)")
    settings = {"tracking_uri": tracking_uri, "model_name": model_name, "experiment": experiment}
    with reg.locked():
        atomic_write_json(reg.dir.mlflow_path, settings)
        reg.log("mlflow", **settings)
    return settings


def mlflow_settings(registry: str | Path) -> dict[str, Any] | None:
    """The registry's MLflow settings (None: not configured)."""
    path = RegistryDir(registry).mlflow_path
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({str(exc).splitlines()[0]}); fix or remove it") from None
    if not isinstance(settings, dict) or not settings.get("tracking_uri") or not settings.get("model_name"):
        raise InputError(f"{path}: needs tracking_uri and model_name")
    return settings


def model_version(client: Any, settings: dict[str, Any], registry: Path, version: str, sha256: str) -> Any:
    """The MLflow model version of the ecgka registry's ``version``, registered (its pyfunc export logged to
    a run of ``settings["experiment"]``) when missing."""
    name = settings["model_name"]
    tags = {TAG_VERSION: version, TAG_REGISTRY: str(registry.resolve()), TAG_SHA: sha256}
    found = [v for v in client.search_model_versions(f"name = '{name}'")
             if all(v.tags.get(k) == val for k, val in tags.items())]
    if found:
        return found[0]
    experiment = experiment_id(client, settings.get("experiment") or "ecgka-registry")
    run = client.create_run(experiment, run_name=f"{name} {version}", tags=tags)
    with tempfile.TemporaryDirectory() as tmp:
        model = save_pyfunc(RegistryDir(registry).export_dir(version), Path(tmp) / "model")
        client.log_artifacts(run.info.run_id, str(model), "model")
    client.set_terminated(run.info.run_id, "FINISHED")
    try:
        client.create_registered_model(name)
    except Exception:  # it exists
        client.get_registered_model(name)
    source = f"{run.info.artifact_uri}/model"  # not runs:/..., which MLflow resolves through its global store
    return client.create_model_version(name, source, run_id=run.info.run_id, tags=tags)


def mirror_champion(registry: str | Path, version: str, sha256: str) -> str | None:
    """Point the MLflow alias ``champion`` at ``version``'s MLflow model version when the registry has an
    MLflow registry configured; returns the MLflow version (None: not configured, or the mirror failed,
    which warns in one line and leaves the ecgka registry as it is)."""
    if not RegistryDir(registry).mlflow_path.is_file():
        return None
    try:
        settings = mlflow_settings(registry)
        with quick_http():
            client = mlflow_client(settings["tracking_uri"])
            found = model_version(client, settings, Path(registry), version, sha256)
            client.set_registered_model_alias(settings["model_name"], CHAMPION, found.version)
    except Exception as exc:  # the registry's promotion stands: MLflow is a mirror
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        say(f"ecgka: MLflow registry not updated ({first}); {registry}@{version} is the champion "
            f"(re-run the promotion to retry the mirror)", file=sys.stderr)
        return None
    return str(found.version)


__all__ = ["save_pyfunc", "configure_mlflow", "mirror_champion"]
