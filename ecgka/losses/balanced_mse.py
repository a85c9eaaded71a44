"""Balanced MSE (Ren et al. 2022): the likelihood under the balanced (uniform) label distribution.

Three estimators of the training-label prior's normaliser, each scaled by the detached ``2 * noise_var``
(so the loss is on the MSE scale):
- BMC (batch Monte Carlo): logits ``-(pred_i - y_j)^2 / (2 noise_var)`` over the batch, cross-entropy against
  the diagonal (B = 1 gives 0);
- GAI: a Gaussian mixture of the training labels (sklearn, K = 8, random_state 0);
- BNI: label bucket centres and frequencies.
The noise sigma is learnable (init 1.0) in its own optimiser group (lr 1e-2, no schedule).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgka.losses.base import Criterion, as_vector, per_sample
from ecgka.losses.methods import METHODS
from ecgka.names import NameTable

ESTIMATORS: NameTable = NameTable("Balanced MSE estimator")


def _columns(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``pred`` and ``target`` as [B, 1] columns (each given as [B] or [B, 1]; target in pred's dtype)."""
    pred = as_vector(pred, "pred")
    return pred.reshape(-1, 1), per_sample(target, pred.shape[0], "target").reshape(-1, 1).to(pred.dtype)


def bmc_loss(pred: Tensor, target: Tensor, noise_var: Tensor) -> Tensor:
    """Batch-based Monte Carlo Balanced MSE."""
    pred, target = _columns(pred, target)
    logits = -0.5 * (pred - target.t()) ** 2 / noise_var
    loss = F.cross_entropy(logits, torch.arange(pred.shape[0], device=pred.device))
    return loss * (2 * noise_var).detach()


def gai_loss(pred: Tensor, target: Tensor, gmm_means: Tensor, gmm_variances: Tensor, gmm_weights: Tensor,
             noise_var: Tensor) -> Tensor:
    """GMM-based analytic integration: -log N(y; pred, s2) + log sum_k pi_k N(pred; mu_k, var_k + s2)."""
    pred, target = _columns(pred, target)
    means, variances = gmm_means.reshape(1, -1), gmm_variances.reshape(1, -1)
    mse_term = (pred - target) ** 2 / 2 / noise_var + 0.5 * torch.log(noise_var)
    sum_var = variances + noise_var
    balancing = -0.5 * torch.log(sum_var) - 0.5 * (pred - means) ** 2 / sum_var + torch.log(gmm_weights.reshape(1, -1))
    loss = mse_term + torch.logsumexp(balancing, dim=-1, keepdim=True)
    return (loss * (2 * noise_var).detach()).mean()


def bni_loss(pred: Tensor, target: Tensor, noise_var: Tensor, bucket_centers: Tensor,
             bucket_weights: Tensor) -> Tensor:
    """Bin-based numerical integration over label buckets (centres, frequencies)."""
    pred, target = _columns(pred, target)
    mse_term = (pred - target) ** 2 / 2 / noise_var
    balancing = -0.5 * (pred - bucket_centers.reshape(1, -1)) ** 2 / noise_var
    balancing = balancing + torch.log(bucket_weights.reshape(1, -1))
    loss = mse_term + torch.logsumexp(balancing, dim=-1, keepdim=True)
    return (loss * (2 * noise_var).detach()).mean()


@ESTIMATORS.register("bmc")
def _bmc(module: BalancedMSE, pred: Tensor, target: Tensor, noise_var: Tensor) -> Tensor:
    return bmc_loss(pred, target, noise_var)


@ESTIMATORS.register("gai")
def _gai(module: BalancedMSE, pred: Tensor, target: Tensor, noise_var: Tensor) -> Tensor:
    prior = [module.get_buffer(n).to(pred.dtype) for n in ("gmm_means", "gmm_variances", "gmm_weights")]
    return gai_loss(pred, target, *prior, noise_var)


@ESTIMATORS.register("bni")
def _bni(module: BalancedMSE, pred: Tensor, target: Tensor, noise_var: Tensor) -> Tensor:
    centers, weights = (module.get_buffer(n).to(pred.dtype) for n in ("bucket_centers", "bucket_weights"))
    return bni_loss(pred, target, noise_var, centers, weights)


def fit_gmm(train_labels: np.ndarray, components: int = 8, random_state: int = 0) -> tuple[np.ndarray, ...]:
    """(means, variances, weights) of a 1-d Gaussian mixture of the training labels (sklearn)."""
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=components, random_state=random_state)
    gmm.fit(np.asarray(train_labels, dtype=np.float64).reshape(-1, 1))
    return gmm.means_.ravel(), gmm.covariances_.ravel(), gmm.weights_.ravel()


def balanced_mse_prior(estimator: str, train_labels, bins: np.ndarray, grid: np.ndarray,
                       gmm_components: int = 8) -> dict[str, np.ndarray]:
    """The training-label prior an estimator needs: nothing (bmc), a GMM (gai), bucket frequencies (bni)."""
    return PRIORS.get(estimator)(train_labels, bins, grid, gmm_components)


PRIORS: NameTable = NameTable("Balanced MSE estimator")
PRIORS.register("bmc")(lambda labels, bins, grid, k: {})
PRIORS.register("gai")(lambda labels, bins, grid, k: dict(
    zip(("gmm_means", "gmm_variances", "gmm_weights"), fit_gmm(labels, k), strict=True)))
PRIORS.register("bni")(lambda labels, bins, grid, k: {
    "bucket_centers": grid, "bucket_weights": np.bincount(bins, minlength=len(grid)) / len(bins)})


class BalancedMSE(Criterion):
    """Balanced MSE with a learnable noise sigma; ``prior`` holds the GAI mixture (gmm_means, gmm_variances,
    gmm_weights) or the BNI buckets (bucket_centers, bucket_weights) as named arrays."""

    display_name = METHODS.get("balanced_mse").display_name

    def __init__(self, estimator: str, init_noise_sigma: float, sigma_lr: float,
                 prior: dict[str, np.ndarray] | None = None):
        super().__init__()
        self.estimator, self.sigma_lr = ESTIMATORS.get(estimator), float(sigma_lr)
        self.noise_sigma = nn.Parameter(torch.tensor(float(init_noise_sigma)))
        for name, values in (prior or {}).items():
            self.register_buffer(name, torch.as_tensor(np.asarray(values), dtype=torch.float32))

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        noise_var = (self.noise_sigma**2).to(pred.dtype)
        return {"balanced_mse": self.estimator(self, pred, target, noise_var)}

    def param_groups(self) -> list[dict]:
        return [{"params": [self.noise_sigma], "lr": self.sigma_lr, "name": "noise_sigma"}]
