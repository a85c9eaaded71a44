"""``ecgka export``: a standalone model with the per-lead z-score inside, and its JSON card.

TorchScript is made with ``torch.jit.script`` (never ``trace``: a traced Net1D fixes its SAME padding to
the traced length), so the export accepts any time length. ONNX needs the optional ``onnx`` packages.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ecgka.catalog import ExportDir, FolderKind, claim_folder
from ecgka.errors import InputError
from ecgka.io import atomic_path, atomic_write_json, sha256_file
from ecgka.names import NameTable
from ecgka.release.card import build_card
from ecgka.training.mlflow_mirror import require_mlflow
from ecgka.training.shard_loading import ZSCORE_EPS

EXPORTERS: NameTable[Callable[[nn.Module, Path, int], None]] = NameTable("export format")


class PortableModel(nn.Module):
    """``model(zscore(x))`` on float32 [B, leads, T]: the z-score exactly as ``zscore_tensor``."""

    def __init__(self, model: nn.Module, zscore: bool = True, eps: float = ZSCORE_EPS):
        super().__init__()
        self.model, self.zscore, self.eps = model, zscore, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.zscore:
            mean = x.mean(dim=-1, keepdim=True)
            std = torch.std(x, dim=-1, unbiased=False, keepdim=True)
            x = (x - mean) / (std + self.eps)
        return self.model(x)


@EXPORTERS.register("torchscript")
def _torchscript(wrapper: nn.Module, target: Path, n_samples: int) -> None:
    try:
        scripted = torch.jit.script(wrapper)
    except Exception as exc:  # a model that TorchScript cannot compile: one line naming why
        raise InputError(f"this model cannot be scripted ({str(exc).splitlines()[0]})") from None
    with atomic_path(target) as tmp:
        scripted.save(str(tmp))


@EXPORTERS.register("onnx")
def _onnx(wrapper: nn.Module, target: Path, n_samples: int) -> None:
    """The *scripted* model through torch.onnx's TorchScript exporter, batch and time axes dynamic: the
    SAME padding stays a computation of the input length (a traced export would fix it), and it takes
    under a second (the dynamo exporter takes minutes on a CPU for the same graph)."""
    missing = [m for m in ("onnx",) if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"--format onnx needs the optional package {', '.join(missing)} "
                         f"(pip install 'ecgka[onnx]'); use --format torchscript")
    example = torch.zeros(1, _in_channels(wrapper.model), n_samples)
    with atomic_path(target) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's deprecation notes are not the user's
        torch.onnx.export(torch.jit.script(wrapper), (example,), str(tmp), input_names=["ecg"],
                          output_names=["potassium"], dynamo=False,
                          dynamic_axes={"ecg": {0: "batch", 2: "time"}, "potassium": {0: "batch"}})


@EXPORTERS.register("mlflow")
def _mlflow(wrapper: nn.Module, target: Path, n_samples: int) -> None:
    """TorchScript, then (``PACKAGERS``) model.ts and card.json as an MLflow pyfunc model in ``OUT/mlflow/``."""
    require_mlflow("--format mlflow")
    _torchscript(wrapper, target, n_samples)


# formats that also package the finished export (model file and card): format -> "module:function", called
# with the ExportDir, returning the package's path
PACKAGERS = {"mlflow": "ecgka.release.mlflow_export:save_pyfunc"}


def _package(fmt: str, export: ExportDir) -> Path | None:
    if fmt not in PACKAGERS:
        return None
    module, _, name = PACKAGERS[fmt].partition(":")
    return getattr(importlib.import_module(module), name)(export)


def _in_channels(model: nn.Module) -> int:
    return next(m.in_channels for m in model.modules() if isinstance(m, nn.Conv1d))


def portable_model(run_dir: str | Path, checkpoint: str = "best") -> tuple[PortableModel, int]:
    """The run's model (CPU, eval mode) wrapped with its z-score, and its number of input leads."""
    from ecgka.catalog import resolve_weights
    from ecgka.training.checkpoint import load_checkpoint
    from ecgka.training.prediction import load_weights, run_config

    cfg = run_config(run_dir)
    in_channels = int(load_checkpoint(resolve_weights(run_dir, checkpoint))["in_channels"])
    model = load_weights(run_dir, cfg, checkpoint, "cpu")
    return PortableModel(model, zscore=cfg.data.zscore).eval(), in_channels


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "torchscript", checkpoint: str = "best", *,
               force: bool = False, registry: dict | None = None) -> Path:
    """Write ``out/model.<ts|onnx>`` and ``out/card.json`` (``mlflow``: model.ts and card.json, packaged as an
    MLflow pyfunc model in ``out/mlflow/``); returns the model file (the package). ``out`` holding another
    model's export is refused unless ``force``. ``registry``: the version it is exported for (in the card)."""
    exporter = EXPORTERS.get(fmt)
    claim = claim_folder(out, FolderKind.EXPORT)
    wrapper, in_channels = portable_model(run_dir, checkpoint)
    card = build_card(run_dir, in_channels, fmt, checkpoint, registry=registry)
    content = f"{card['run']['path']}:{checkpoint}:{fmt}"
    if claim.check_replace(content, force=force, what=f"the export of {claim.content}"):
        claim.clear()
    target = ExportDir(out).model_path(fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    exporter(wrapper, target, int(card["input"]["n_samples"] or 5000))
    card["model"]["file"], card["model"]["file_sha256"] = target.name, sha256_file(target)
    atomic_write_json(ExportDir(out).card_path, card)
    packaged = _package(fmt, ExportDir(out))
    claim.write_marker(content=content)
    return packaged or target
