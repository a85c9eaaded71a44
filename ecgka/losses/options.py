"""Typed options of every method: the one home of each default (no torch: configs validate fast).

Names that select an implementation (base loss, sorter, rounding, kernel, estimator) are ``Literal``
types here, so that a config is checked when it is loaded; ``tests/test_losses_registry.py`` checks that
each ``Literal`` equals the names of the registry that implements it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ecgka.config import ConfigModel

Base = Literal["l1", "l2", "focal_l1", "huber"]
Sorter = Literal["soft", "hard", "auto", "released"]
Rounding = Literal["official", "released", "paper", "quantile"]
Kernel = Literal["gaussian", "triang", "laplace"]
Reweight = Literal["sqrt_inv", "inverse", "none"]
Estimator = Literal["bmc", "gai", "bni"]
ConRForm = Literal["clean", "released"]


class DistLossOptions(ConfigModel):
    """Dist Loss (YAML ``method.dist_loss``, for ``name: dist_loss`` and added to any other method).
    Defaults are the released code's, with the documented defects repaired."""

    base: Base = "l2"
    loss_weight: float = 1.0
    sorter: Sorter = "soft"
    regularization_strength: float = Field(0.1, gt=0)
    rounding: Rounding = "official"
    bw_method: float = Field(0.5, gt=0)
    reweight: Literal["inverse", "none"] = "inverse"
    clip: tuple[float, float] = (5, 1000)
    weight_alignment: Literal["pseudo_label", "batch_order"] = "pseudo_label"
    weight_sample_term: bool = True


class NoParams(ConfigModel):
    """A method without parameters of its own (``dist_loss``: its options go under ``method.dist_loss``)."""


class VanillaParams(ConfigModel):
    base: Base = "l2"


class LDSParams(ConfigModel):
    """LDS (Yang et al. 2021): the README's ks 5, sigma 2, sqrt_inv."""

    base: Base = "l2"
    reweight: Reweight = "sqrt_inv"
    lds: bool = True
    kernel: Kernel = "gaussian"
    ks: int = Field(5, ge=1)
    sigma: float = Field(2.0, gt=0)
    truncate_inverse: bool = True


class FDSParams(ConfigModel):
    """FDS: buckets are the label bins (``bucket_num`` None: the number of grid points)."""

    base: Base = "l2"
    feature_dim: int | None = Field(None, ge=1)
    bucket_num: int | None = Field(None, ge=1)
    bucket_start: int = Field(0, ge=0)
    start_update: int = Field(0, ge=0)
    start_smooth: int = Field(1, ge=0)
    kernel: Kernel = "gaussian"
    ks: int = Field(5, ge=1)
    sigma: float = Field(2.0, gt=0)
    momentum: float | None = 0.9
    alias_last_epoch: bool = True
    # Where the per-epoch statistics come from (the trainer collects them): ``steps`` = the raw features of
    # the epoch's training steps (ecgka: no extra pass); ``epoch_pass`` = the released code's, a full no-grad
    # pass over the training set at the end of the epoch (train mode, fresh augmentation, last partial batch
    # kept), taking the features the head sees, i.e. already calibrated (the released in-place write).
    statistics: Literal["steps", "epoch_pass"] = "steps"


class RankSimParams(ConfigModel):
    base: Base = "l2"
    gamma: float = 100.0
    lambda_val: float = Field(2.0, gt=0)


class ConRParams(ConfigModel):
    """ConR on the label grid: ``w`` is a number of bins (labels whose bins differ by <= w are positives;
    predictions within w grid steps are close) and ``e`` is per bin. The defaults, 1 bin and 0.01 per bin,
    are the released age values (1 year, 0.01 per year) and 0.1 mmol/L, 0.1 per mmol/L for potassium.
    ``form``: ``clean`` (default) or ``released`` (the released function's arithmetic, docs/methods.md)."""

    base: Base = "l2"
    beta: float = 4.0
    w: int = Field(1, ge=0)
    t: float = Field(0.07, gt=0)
    e: float = 0.01
    form: ConRForm = "clean"


class BalancedMSEParams(ConfigModel):
    estimator: Estimator = "bmc"
    init_noise_sigma: float = Field(1.0, gt=0)
    sigma_lr: float = Field(1e-2, ge=0)
    gmm_components: int = Field(8, ge=1)
