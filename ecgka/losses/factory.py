"""From a typed ``MethodConfig`` to a ``Criterion``: one builder per method, no re-validation on the way.

``build_criterion(method, ctx)`` is the trainer's path; ``create_loss(name, ...)`` is the Python API's
(it validates its keyword arguments into a ``MethodConfig`` once, then takes the same path). A
``dist_loss`` block adds the Dist Loss distribution term to any method ("LDS + Dist Loss").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ecgka.config import validate_config
from ecgka.errors import ConfigError, InputError
from ecgka.labels import LabelGrid, as_grid
from ecgka.losses.balanced_mse import BalancedMSE, balanced_mse_prior
from ecgka.losses.base import Criterion
from ecgka.losses.config import MethodConfig
from ecgka.losses.conr import ConRMethod
from ecgka.losses.criteria import DistLossMethod, Vanilla, WeightedByBin, WithDistLoss
from ecgka.losses.distloss import DistLoss
from ecgka.losses.fds import FDSMethod
from ecgka.losses.methods import METHODS
from ecgka.losses.options import (
    BalancedMSEParams,
    ConRParams,
    FDSParams,
    LDSParams,
    NoParams,
    RankSimParams,
    VanillaParams,
)
from ecgka.losses.ranksim import RankSimMethod
from ecgka.losses.weighting import lds_table
from ecgka.names import NameTable


@dataclass(frozen=True)
class LossContext:
    """What every method may build from: the training labels, the label grid and the batch size."""

    train_labels: np.ndarray
    grid: LabelGrid
    batch_size: int

    @cached_property
    def bins(self) -> np.ndarray:
        """Bin index of each training label, clipped to the grid."""
        return self.grid.clipped_index(self.train_labels)


BUILDERS: NameTable[Callable[[LossContext, Any, MethodConfig], Criterion]] = NameTable("loss method")


@BUILDERS.register("vanilla")
def _vanilla(ctx: LossContext, p: VanillaParams, method: MethodConfig) -> Criterion:
    return Vanilla(p.base)


@BUILDERS.register("lds")
def _lds(ctx: LossContext, p: LDSParams, method: MethodConfig) -> Criterion:
    table = lds_table(ctx.bins, ctx.grid.n_bins, p.reweight, p.lds, p.kernel, p.ks, p.sigma, p.truncate_inverse)
    return WeightedByBin(table, ctx.grid, p.base)


@BUILDERS.register("fds")
def _fds(ctx: LossContext, p: FDSParams, method: MethodConfig) -> Criterion:
    options = p.model_dump(exclude={"base", "feature_dim", "statistics"})
    options["bucket_num"] = p.bucket_num or ctx.grid.n_bins
    return FDSMethod(ctx.grid, p.base, p.feature_dim, **options)


@BUILDERS.register("ranksim")
def _ranksim(ctx: LossContext, p: RankSimParams, method: MethodConfig) -> Criterion:
    return RankSimMethod(p.base, p.gamma, p.lambda_val)


@BUILDERS.register("conr")
def _conr(ctx: LossContext, p: ConRParams, method: MethodConfig) -> Criterion:
    """ConR on the context's grid: w in bins, e per bin."""
    return ConRMethod(p.base, p.beta, p.w, p.t, p.e, ctx.grid, p.form)


@BUILDERS.register("balanced_mse")
def _balanced_mse(ctx: LossContext, p: BalancedMSEParams, method: MethodConfig) -> Criterion:
    prior = balanced_mse_prior(p.estimator, ctx.train_labels, ctx.bins, ctx.grid.centres, p.gmm_components)
    return BalancedMSE(p.estimator, p.init_noise_sigma, p.sigma_lr, prior)


def _dist(ctx: LossContext, method: MethodConfig) -> DistLoss:
    return DistLoss(ctx.train_labels, ctx.grid, ctx.batch_size, method.dist_loss)


@BUILDERS.register("dist_loss")
def _dist_loss(ctx: LossContext, p: NoParams, method: MethodConfig) -> Criterion:
    return DistLossMethod(_dist(ctx, method))


def build_criterion(method: MethodConfig, ctx: LossContext) -> Criterion:
    """The criterion of a validated method config."""
    spec = METHODS.get(method.name)
    criterion = BUILDERS.get(method.name)(ctx, method.params, method)
    criterion.display_name = spec.display_name
    if method.dist_loss is not None and not spec.is_dist_loss:
        criterion = WithDistLoss(criterion, _dist(ctx, method))
    return criterion


def loss_context(train_labels, label_range, batch_size: int) -> LossContext:
    """Check the training labels, the grid (a LabelGrid or (lo, hi, step)) and the batch size."""
    labels = np.asarray(train_labels, dtype=np.float64).ravel()
    if labels.size == 0 or not np.isfinite(labels).all():
        raise InputError("train_labels must be a non-empty array of finite values")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    return LossContext(labels, as_grid(label_range), int(batch_size))


def create_loss(name: str, *, train_labels, label_range, batch_size: int, dist_loss: dict | None = None,
                **params: Any) -> Criterion:
    """Build method ``name`` from keyword parameters (validated once, as a YAML ``method:`` section is)."""
    method = validate_config(MethodConfig, {"name": name, "params": params, "dist_loss": dist_loss},
                             source=f"method {name!r}")
    return build_criterion(method, loss_context(train_labels, label_range, batch_size))
