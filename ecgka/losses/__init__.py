"""Imbalanced-regression methods: Dist Loss and the baselines (LDS, FDS, RankSim, ConR, Balanced MSE).

``create_loss(name, *, train_labels, label_range, batch_size, dist_loss=None, **params)`` builds a
``Criterion`` (see ``docs/contracts.md``); ``list_losses()`` names the methods; ``MethodConfig`` is the
YAML ``method:`` section. Details and every deviation from the released code: ``docs/methods.md``.
"""

from ecgka.losses.balanced_mse import BalancedMSE, bmc_loss, bni_loss, gai_loss
from ecgka.losses.base import ELEMENTWISE, Criterion, check_pair, elementwise
from ecgka.losses.config import DistLossOptions, MethodConfig
from ecgka.losses.conr import conr_loss
from ecgka.losses.dist_loss import DistLoss, dist_loss, distribution_term
from ecgka.losses.distribution import (
    ROUNDINGS,
    RoundingRepairWarning,
    batch_counts,
    bin_index,
    label_grid,
    label_pmf,
    pseudo_labels,
)
from ecgka.losses.fds import FDS
from ecgka.losses.ranksim import ranksim_regularizer
from ecgka.losses.registry import LossContext, create_loss, display_name, list_losses
from ecgka.losses.sorting import SORTERS, sort_predictions
from ecgka.losses.weighting import (
    inverse_frequency_table,
    inverse_frequency_weights,
    lds_kernel_window,
    lds_table,
    lds_weights,
)

__all__ = [
    "ELEMENTWISE", "FDS", "ROUNDINGS", "SORTERS", "BalancedMSE", "Criterion", "DistLoss", "DistLossOptions",
    "LossContext", "MethodConfig", "RoundingRepairWarning", "batch_counts", "bin_index", "bmc_loss",
    "bni_loss", "check_pair", "conr_loss", "create_loss", "display_name", "dist_loss", "distribution_term",
    "elementwise", "gai_loss", "inverse_frequency_table", "inverse_frequency_weights", "label_grid",
    "label_pmf", "lds_kernel_window", "lds_table", "lds_weights", "list_losses", "pseudo_labels",
    "ranksim_regularizer", "sort_predictions",
]
