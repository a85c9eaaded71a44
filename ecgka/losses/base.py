"""The shared criterion interface, shape checks, the single reduction, and the elementwise base losses.

Every method (vanilla, LDS, FDS, RankSim, ConR, Balanced MSE, Dist Loss) is a ``Criterion``: it returns
its terms (per-sample tensors or scalars) from ``compute`` and the base reduces each term with a mean
once, sums them into ``"loss"`` and hands detached copies out for logging (``ecgka/docs/contracts.md``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecgka.errors import ConfigError
from ecgka.names import NameTable

ELEMENTWISE: NameTable = NameTable("base loss")


@ELEMENTWISE.register("l1")
def l1(pred: Tensor, target: Tensor) -> Tensor:
    """Absolute error per element."""
    return (pred - target).abs()


@ELEMENTWISE.register("l2")
def l2(pred: Tensor, target: Tensor) -> Tensor:
    """Squared error per element (MSE before the mean)."""
    return (pred - target) ** 2


@ELEMENTWISE.register("focal_l1")
def focal_l1(pred: Tensor, target: Tensor, beta: float = 0.2, gamma: float = 1.0) -> Tensor:
    """Focal L1 of the DIR code (sigmoid activation): |d| * (2 sigmoid(beta |d|) - 1) ** gamma."""
    err = (pred - target).abs()
    return err * (2 * torch.sigmoid(beta * err) - 1) ** gamma


@ELEMENTWISE.register("huber")
def huber(pred: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Huber (smooth L1 of the DIR code): 0.5 d^2 / beta below beta, |d| - 0.5 beta above."""
    err = (pred - target).abs()
    return torch.where(err < beta, 0.5 * err**2 / beta, err - 0.5 * beta)


def elementwise(name: str):
    """The elementwise loss function registered under ``name`` (l1, l2, focal_l1, huber)."""
    return ELEMENTWISE.get(name)


def as_vector(x: Tensor, name: str) -> Tensor:
    """Accept [B] or [B, 1] and return [B]; any other shape is an error naming the argument."""
    if x.dim() == 2 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() != 1:
        raise ValueError(f"{name} must have shape [B] or [B, 1], got {list(x.shape)}")
    return x


LOW_PRECISION = (torch.float16, torch.bfloat16)


def full_precision(x: Tensor) -> Tensor:
    """float16/bfloat16 (autocast outputs) -> float32: losses, sorts and pseudo-labels need the precision."""
    return x.float() if x.dtype in LOW_PRECISION else x


def check_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten ``pred`` and ``target`` to [B] (float32 at least) and check they hold the same number of rows."""
    pred, target = full_precision(as_vector(pred, "pred")), as_vector(target, "target")
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"pred has {pred.shape[0]} rows but target has {target.shape[0]}")
    if pred.shape[0] == 0:
        raise ValueError("empty batch: pred and target have 0 rows")
    return pred, target.to(pred.dtype)


def per_sample(x, n: int, name: str) -> Tensor:
    """A per-sample argument (weights, pseudo-labels, ...) as [n]: it must have the batch's shape, [n] or
    [n, 1] (the released API's column layout); anything else, e.g. [1, n] or [n, 2], which would broadcast
    into an [n, n] or wrong-length product, is a ``ValueError`` naming the argument and both shapes."""
    x = torch.as_tensor(x)
    if tuple(x.shape) not in ((n,), (n, 1)):
        raise ValueError(f"{name} must have the batch's shape [{n}] or [{n}, 1], got {list(x.shape)}")
    return x.reshape(n)


def apply_weights(values: Tensor, weights: Tensor | None, name: str = "weights") -> Tensor:
    """Per-sample values [B] times per-sample weights (shape-checked) or as is; the caller takes the mean."""
    return values if weights is None else values * per_sample(weights, values.shape[0], name)


class Criterion(nn.Module):
    """Base of every method: ``forward(pred, target, *, features=None, epoch=0) -> {"loss", "terms"}``.

    Subclasses implement ``compute`` returning ``{term name: tensor}``; each tensor is reduced by its mean
    here (once) and the means are summed. Hooks default to no-ops so the trainer never asks which method
    it runs.
    """

    requires_features: bool = False
    requires_views: bool = False
    display_name: str = "criterion"

    def compute(self, pred: Tensor, target: Tensor, features: Tensor | None, epoch: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor, *, features: Tensor | None = None, epoch: int = 0) -> dict:
        pred, target = check_pair(pred, target)
        if self.requires_features and features is None:
            raise ConfigError(f"method {self.display_name!r} needs the features: pass features=...")
        if features is not None and features.shape[0] != pred.shape[0]:
            raise ValueError(f"features have {features.shape[0]} rows but pred has {pred.shape[0]}")
        features = None if features is None else full_precision(features)
        terms = {name: value.mean() for name, value in self.compute(pred, target, features, epoch).items()}
        loss = torch.stack(list(terms.values())).sum()
        return {"loss": loss, "terms": {name: value.detach() for name, value in terms.items()}}

    def transform_features(self, features: Tensor, target: Tensor, epoch: int) -> Tensor:
        """Feature calibration before the head (FDS, training only); identity otherwise."""
        return features

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before epoch ``epoch``."""

    def on_epoch_end(self, epoch: int, features: Tensor, targets: Tensor) -> None:
        """Called after epoch ``epoch`` with the training features [N, F] and targets [N]."""

    def param_groups(self) -> list[dict]:
        """Extra optimiser groups owned by the criterion (e.g. the Balanced MSE noise sigma)."""
        return []

    def set_gather(self, gather) -> None:
        """Install a cross-rank gather for the Dist Loss distribution term (no-op for other methods)."""
