"""The method registry: ``create_loss(name, *, train_labels, label_range, batch_size, dist_loss, **params)``.

Each method is one registered ``MethodSpec`` (a builder taking a ``LossContext`` and the method's own
keyword parameters). ``dist_loss={...}`` adds the Dist Loss distribution term to any method; for the
``dist_loss`` method itself those options are its parameters. The trainer never branches on names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ecgka.config import validate_config
from ecgka.errors import ConfigError, InputError
from ecgka.losses.balanced_mse import BalancedMSE, balanced_mse_prior
from ecgka.losses.base import Criterion
from ecgka.losses.config import DistLossOptions
from ecgka.losses.conr import ConRMethod
from ecgka.losses.criteria import DistLossMethod, Vanilla, WeightedByBin, WithDistLoss
from ecgka.losses.dist_loss import DistLoss
from ecgka.losses.distribution import label_grid
from ecgka.losses.fds import FDSMethod
from ecgka.losses.ranksim import RankSimMethod
from ecgka.losses.weighting import lds_table
from ecgka.registry import Registry


@dataclass(frozen=True)
class LossContext:
    """What every method may build from: training labels, the label grid (lo, hi, step), batch size."""

    train_labels: np.ndarray
    lo: float
    hi: float
    step: float
    batch_size: int

    @property
    def label_range(self) -> tuple[float, float, float]:
        return (self.lo, self.hi, self.step)

    @cached_property
    def n_bins(self) -> int:
        return len(label_grid(self.lo, self.hi, self.step))

    @cached_property
    def bins(self) -> np.ndarray:
        """Bin index of each training label, clipped to the grid."""
        index = np.rint((self.train_labels - self.lo) / self.step)
        return np.clip(index, 0, self.n_bins - 1).astype(np.int64)


@dataclass(frozen=True)
class MethodSpec:
    build: Callable[..., Criterion]
    display_name: str
    params_are_dist_options: bool = False


METHODS: Registry[MethodSpec] = Registry("loss method")


def register(name: str, display_name: str, params_are_dist_options: bool = False):
    def decorator(build: Callable[..., Criterion]) -> Callable[..., Criterion]:
        METHODS.register(name)(MethodSpec(build, display_name, params_are_dist_options))
        return build

    return decorator


@register("vanilla", "Vanilla")
def _vanilla(ctx: LossContext, base: str = "l2") -> Criterion:
    return Vanilla(base)


@register("lds", "LDS")
def _lds(ctx: LossContext, base: str = "l2", reweight: str = "sqrt_inv", lds: bool = True,
         kernel: str = "gaussian", ks: int = 5, sigma: float = 2, truncate_inverse: bool = True) -> Criterion:
    table = lds_table(ctx.bins, ctx.n_bins, reweight, lds, kernel, ks, sigma, truncate_inverse)
    return WeightedByBin(table, ctx.lo, ctx.step, base)


@register("fds", "FDS")
def _fds(ctx: LossContext, base: str = "l2", feature_dim: int | None = None, bucket_num: int | None = None,
         bucket_start: int = 0, start_update: int = 0, start_smooth: int = 1, kernel: str = "gaussian",
         ks: int = 5, sigma: float = 2, momentum: float | None = 0.9, alias_last_epoch: bool = True) -> Criterion:
    """Buckets are the label bins (bucket_num defaults to the number of grid points, bucket_start to 0)."""
    return FDSMethod(ctx.lo, ctx.step, base, feature_dim, bucket_num=bucket_num or ctx.n_bins,
                     bucket_start=bucket_start, start_update=start_update, start_smooth=start_smooth,
                     kernel=kernel, ks=ks, sigma=sigma, momentum=momentum, alias_last_epoch=alias_last_epoch)


@register("ranksim", "RankSim")
def _ranksim(ctx: LossContext, base: str = "l2", gamma: float = 100.0, lambda_val: float = 2.0) -> Criterion:
    return RankSimMethod(base, gamma, lambda_val)


@register("conr", "ConR")
def _conr(ctx: LossContext, base: str = "l2", beta: float = 4.0, w: float | None = None, t: float = 0.07,
          e: float | None = None) -> Criterion:
    """w and e default to one label bin and 0.01 per bin (ages: 1 year, 0.01; potassium: 0.1, 0.1 per mmol/L)."""
    w = ctx.step if w is None else w
    e = 0.01 / ctx.step if e is None else e
    return ConRMethod(base, beta, w, t, e)


@register("balanced_mse", "Balanced MSE")
def _balanced_mse(ctx: LossContext, estimator: str = "bmc", init_noise_sigma: float = 1.0, sigma_lr: float = 1e-2,
                  gmm_components: int = 8) -> Criterion:
    grid = label_grid(ctx.lo, ctx.hi, ctx.step)
    prior = balanced_mse_prior(estimator, ctx.train_labels, ctx.bins, grid, gmm_components)
    return BalancedMSE(estimator, init_noise_sigma, sigma_lr, prior)


def build_dist(ctx: LossContext, options: dict[str, Any]) -> DistLoss:
    """A ``DistLoss`` module from validated Dist Loss options."""
    opts = validate_config(DistLossOptions, options, source="dist_loss").model_dump()
    return DistLoss(ctx.train_labels, ctx.label_range, ctx.batch_size, **opts)


@register("dist_loss", "Dist Loss", params_are_dist_options=True)
def _dist_loss(ctx: LossContext, **options: Any) -> Criterion:
    return DistLossMethod(build_dist(ctx, options))


def _check_params(name: str, build: Callable[..., Criterion], params: dict[str, Any]) -> None:
    signature = inspect.signature(build)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    valid = [p for p in signature.parameters if p != "ctx"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"method {name!r}: unknown parameter(s) {', '.join(unknown)} (valid: {', '.join(valid)})")


def _context(train_labels, label_range, batch_size) -> LossContext:
    labels = np.asarray(train_labels, dtype=np.float64).ravel()
    if labels.size == 0 or not np.isfinite(labels).all():
        raise InputError("train_labels must be a non-empty array of finite values")
    try:
        lo, hi, step = (float(v) for v in label_range)
    except (TypeError, ValueError):
        raise ConfigError(f"label_range must be (lo, hi, step), got {label_range!r}") from None
    label_grid(lo, hi, step)
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    return LossContext(labels, lo, hi, step, int(batch_size))


def create_loss(name: str, *, train_labels, label_range, batch_size: int, dist_loss: dict | None = None,
                **params: Any) -> Criterion:
    """Build the criterion of method ``name``; ``dist_loss`` (options) adds the Dist Loss term to it."""
    spec = METHODS.get(name)
    ctx = _context(train_labels, label_range, batch_size)
    if spec.params_are_dist_options:
        params, dist_loss = {**(dist_loss or {}), **params}, None
    _check_params(name, spec.build, params)
    criterion = spec.build(ctx, **params)
    criterion.display_name = spec.display_name
    if dist_loss is not None:
        criterion = WithDistLoss(criterion, build_dist(ctx, dict(dist_loss)))
    return criterion


def list_losses() -> list[str]:
    """Names of the registered methods."""
    return METHODS.names()


def display_name(name: str, with_dist_loss: bool = False) -> str:
    """The paper's name of a method, e.g. ``display_name("lds", True) == "LDS + Dist Loss"``."""
    spec = METHODS.get(name)
    suffix = " + Dist Loss" if with_dist_loss and not spec.params_are_dist_options else ""
    return spec.display_name + suffix
