"""Imbalanced-regression methods: Dist Loss and the baselines (LDS, FDS, RankSim, ConR, Balanced MSE).

``create_loss(name, *, train_labels, label_range, batch_size, dist_loss=None, **params)`` builds a
``Criterion`` (see ``docs/contracts.md``); ``label_range`` is an ``ecgka.labels.LabelGrid`` or
``(lo, hi, step)``. ``list_losses()`` names the methods; ``MethodConfig`` is the YAML ``method:`` section,
typed when loaded; ``build_criterion(method_config, LossContext(...))`` is the trainer's path. Details and
every deviation from the released code: ``docs/methods.md``.
"""

from __future__ import annotations

from ecgka.lazy import lazy_exports

# name -> module: imported on first use, so that configs validate without importing torch
_EXPORTS = {
    "BalancedMSE": "ecgka.losses.balanced_mse",
    "bmc_loss": "ecgka.losses.balanced_mse",
    "bni_loss": "ecgka.losses.balanced_mse",
    "gai_loss": "ecgka.losses.balanced_mse",
    "ELEMENTWISE": "ecgka.losses.base",
    "Criterion": "ecgka.losses.base",
    "check_pair": "ecgka.losses.base",
    "elementwise": "ecgka.losses.base",
    "MethodConfig": "ecgka.losses.config",
    "conr_loss": "ecgka.losses.conr",
    "DistLoss": "ecgka.losses.distloss",
    "dist_loss": "ecgka.losses.distloss",
    "distribution_term": "ecgka.losses.distloss",
    "ROUNDINGS": "ecgka.losses.distribution",
    "RoundingRepairWarning": "ecgka.losses.distribution",
    "batch_counts": "ecgka.losses.distribution",
    "label_pmf": "ecgka.losses.distribution",
    "pseudo_labels": "ecgka.losses.distribution",
    "LossContext": "ecgka.losses.factory",
    "build_criterion": "ecgka.losses.factory",
    "create_loss": "ecgka.losses.factory",
    "loss_context": "ecgka.losses.factory",
    "FDS": "ecgka.losses.fds",
    "display_name": "ecgka.losses.methods",
    "list_losses": "ecgka.losses.methods",
    "DistLossOptions": "ecgka.losses.options",
    "ranksim_regularizer": "ecgka.losses.ranksim",
    "SORTERS": "ecgka.losses.sorting",
    "sort_predictions": "ecgka.losses.sorting",
    "inverse_frequency_table": "ecgka.losses.weighting",
    "inverse_frequency_weights": "ecgka.losses.weighting",
    "lds_kernel_window": "ecgka.losses.weighting",
    "lds_table": "ecgka.losses.weighting",
    "lds_weights": "ecgka.losses.weighting",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
