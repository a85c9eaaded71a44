"""Dist Loss (Nie, Tang, Hong, ICLR 2025): sample error plus the distance between sorted predictions and
pseudo-labels drawn from the training-label distribution.

``total = mean(loss_weight * w'_i * l(sort(pred)_i, pseudo_i)) + mean(w_i * l(pred_i, target_i))`` with one
elementwise loss ``l`` for both terms; ``w`` are the INV sample weights (batch order) and ``w'`` the weight
of pseudo-label i's bin (``weight_alignment="pseudo_label"``) or, as released, of batch sample i
(``"batch_order"``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ecgka.config import validate_config
from ecgka.errors import ConfigError
from ecgka.labels import as_grid
from ecgka.losses.base import apply_weights, as_vector, check_pair, elementwise, full_precision, per_sample
from ecgka.losses.distribution import label_pmf, pseudo_labels
from ecgka.losses.options import DistLossOptions
from ecgka.losses.sorting import sort_predictions
from ecgka.losses.weighting import inverse_frequency_table
from ecgka.names import NameTable

ALIGNMENTS: NameTable = NameTable("weight alignment")


@ALIGNMENTS.register("pseudo_label")
def _pseudo_label_alignment(weights: Tensor | None, pseudo_weights: Tensor | None) -> Tensor | None:
    if weights is not None and pseudo_weights is None:  # weights given for the sample term only
        raise ConfigError("weight_alignment 'pseudo_label' needs pseudo_weights (weight of each pseudo-label)")
    return pseudo_weights


@ALIGNMENTS.register("batch_order")
def _batch_order_alignment(weights: Tensor | None, pseudo_weights: Tensor | None) -> Tensor | None:
    return weights  # the released misalignment: sorted position i gets batch sample i's weight


def distribution_term(pred: Tensor, pseudo, options: DistLossOptions, weights: Tensor | None = None) -> Tensor:
    """Elementwise ``weights_i * l(sort(pred)_i, pseudo_i)`` (length B, not reduced); ``pred``, ``pseudo`` and
    ``weights`` each [B] or [B, 1]."""
    pred = full_precision(as_vector(pred, "pred"))
    pseudo = per_sample(torch.as_tensor(pseudo, dtype=pred.dtype, device=pred.device), pred.shape[0], "pseudo")
    sorted_pred = sort_predictions(pred, options.sorter, options.regularization_strength)
    return apply_weights(elementwise(options.base)(sorted_pred, pseudo), weights)


def dist_loss(pred, target, pseudo, *, weights=None, pseudo_weights=None, return_terms=False, **options):
    """Mean Dist Loss of a batch; with ``return_terms`` also (distribution term, sample term) means.

    ``options`` are ``DistLossOptions`` fields (base, loss_weight, sorter, regularization_strength,
    weight_alignment, ...). ``weights`` are per-sample (batch order) INV weights; with
    ``weight_alignment="pseudo_label"`` the distribution term uses ``pseudo_weights`` (the weight of each
    pseudo-label's bin) instead.
    """
    opts = validate_config(DistLossOptions, options, source="dist_loss")
    pred, target = check_pair(pred, target)
    weights, pseudo_weights = (None if x is None else per_sample(x, pred.shape[0], name)
                               for x, name in ((weights, "weights"), (pseudo_weights, "pseudo_weights")))
    dist_weights = ALIGNMENTS.get(opts.weight_alignment)(weights, pseudo_weights)
    distribution = distribution_term(pred, pseudo, opts, dist_weights).mean()
    sample = apply_weights(elementwise(opts.base)(pred, target), weights).mean()
    total = opts.loss_weight * distribution + sample
    return (total, distribution, sample) if return_terms else total


class DistLoss(nn.Module):
    """Dist Loss built from the training labels: KDE, pseudo-labels per batch size (cached), INV weights.

    A drop-in criterion: ``loss = DistLoss(...)(pred, target)``. A batch of another size (the last one)
    gets its own pseudo-labels. ``gather`` (optional) maps a local [B] tensor to the concatenation over
    all ranks so the distribution term sees the global batch; it must pass gradients back to the local
    slice (e.g. ``torch.distributed.nn.functional.all_gather`` + ``torch.cat``).
    """

    def __init__(self, train_labels, label_range, batch_size: int, options: DistLossOptions | None = None, *,
                 gather: Callable[[Tensor], Tensor] | None = None, **option_values):
        super().__init__()
        if options is None:
            options = validate_config(DistLossOptions, option_values, source="DistLoss")
        elif option_values:
            raise ConfigError("DistLoss: give either options=DistLossOptions(...) or keyword options, not both")
        self.options, self.label_grid, self.batch_size = options, as_grid(label_range), int(batch_size)
        self.gather = gather
        self.grid, self.pmf = label_pmf(train_labels, self.label_grid, options.bw_method)
        self.register_buffer("weight_table", self._table(train_labels))
        self._pseudo: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._pseudo_tensors_cache: dict[tuple, tuple[Tensor, Tensor | None]] = {}
        self.pseudo_for(self.batch_size)

    def _table(self, train_labels) -> Tensor | None:
        if self.options.reweight == "none":
            return None
        grid = self.label_grid
        table = inverse_frequency_table(grid.clipped_index(train_labels), grid.n_bins, self.options.clip)
        return torch.as_tensor(table, dtype=torch.float32)

    def pseudo_for(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(pseudo-labels, their bin indices) for a batch of ``n``, computed once per size."""
        if n not in self._pseudo:
            values = pseudo_labels(self.grid, self.pmf, n, self.options.rounding)
            self._pseudo[n] = (values, self.label_grid.bin_index(values))
        return self._pseudo[n]

    def _pseudo_tensors(self, n: int, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """Pseudo-labels and their bins' weights as tensors on ``like``'s device and dtype (cached)."""
        key = (n, like.device, like.dtype)
        if key not in self._pseudo_tensors_cache:
            values, bins = self.pseudo_for(n)
            pseudo = torch.as_tensor(values, dtype=like.dtype, device=like.device)
            weights = None
            if self.weight_table is not None:
                index = torch.as_tensor(bins).clamp(0, self.weight_table.shape[0] - 1)
                weights = self.weight_table.cpu()[index].to(device=like.device, dtype=like.dtype)
            self._pseudo_tensors_cache[key] = (pseudo, weights)
        return self._pseudo_tensors_cache[key]

    def _load_from_state_dict(self, *args, **kwargs):
        self._pseudo_tensors_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _weights(self, target: Tensor) -> Tensor | None:
        if self.weight_table is None:
            return None
        return self.weight_table[self.label_grid.clipped_index_torch(target)].to(target.dtype)

    def distribution(self, pred: Tensor, target: Tensor) -> Tensor:
        """Elementwise, weighted ``loss_weight * l(sort(pred), pseudo)`` over the (gathered) batch."""
        if self.gather is not None:
            pred, target = self.gather(pred), self.gather(target.detach())
        pseudo, pseudo_weights = self._pseudo_tensors(pred.shape[0], pred)
        # only the released misalignment needs the batch samples' own weights
        alignment = self.options.weight_alignment
        batch_weights = self._weights(target) if alignment == "batch_order" else None
        weights = ALIGNMENTS.get(alignment)(batch_weights, pseudo_weights)
        return self.options.loss_weight * distribution_term(pred, pseudo, self.options, weights)

    def sample(self, pred: Tensor, target: Tensor) -> Tensor:
        """Elementwise ``w_i * l(pred_i, target_i)`` (INV-weighted when ``weight_sample_term``)."""
        weights = self._weights(target) if self.options.weight_sample_term else None
        return apply_weights(elementwise(self.options.base)(pred, target), weights)

    def terms(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(total, distribution term, sample term), each a mean."""
        pred, target = check_pair(pred, target)
        distribution, sample = self.distribution(pred, target).mean(), self.sample(pred, target).mean()
        return distribution + sample, distribution, sample

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.terms(pred, target)[0]
