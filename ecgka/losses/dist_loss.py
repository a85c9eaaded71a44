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

from ecgka.errors import ConfigError
from ecgka.losses.base import apply_weights, check_pair, elementwise
from ecgka.losses.distribution import label_grid, label_pmf, pseudo_labels
from ecgka.losses.sorting import sort_predictions
from ecgka.losses.weighting import inverse_frequency_table, lookup
from ecgka.registry import Registry

ALIGNMENTS: Registry = Registry("weight alignment")


@ALIGNMENTS.register("pseudo_label")
def _pseudo_label_alignment(weights: Tensor | None, pseudo_weights: Tensor | None) -> Tensor | None:
    if weights is not None and pseudo_weights is None:  # weights given for the sample term only
        raise ConfigError("weight_alignment 'pseudo_label' needs pseudo_weights (weight of each pseudo-label)")
    return pseudo_weights


@ALIGNMENTS.register("batch_order")
def _batch_order_alignment(weights: Tensor | None, pseudo_weights: Tensor | None) -> Tensor | None:
    return weights  # the released misalignment: sorted position i gets batch sample i's weight


def distribution_term(pred: Tensor, pseudo, *, base="l2", sorter="soft", regularization_strength=0.1,
                      weights: Tensor | None = None) -> Tensor:
    """Elementwise ``weights_i * l(sort(pred)_i, pseudo_i)`` (length B, not reduced)."""
    pseudo = torch.as_tensor(pseudo, dtype=pred.dtype, device=pred.device).reshape(-1)
    if pseudo.shape[0] != pred.shape[0]:
        raise ValueError(f"{pseudo.shape[0]} pseudo-labels for a batch of {pred.shape[0]} predictions")
    sorted_pred = sort_predictions(pred, sorter, regularization_strength)
    return apply_weights(elementwise(base)(sorted_pred, pseudo), weights)


def dist_loss(pred, target, pseudo, *, base="l2", loss_weight=1.0, sorter="soft", regularization_strength=0.1,
              weights=None, weight_alignment="pseudo_label", pseudo_weights=None, return_terms=False):
    """Mean Dist Loss of a batch; with ``return_terms`` also (distribution term, sample term) means.

    ``weights`` are per-sample (batch order) INV weights; with ``weight_alignment="pseudo_label"`` the
    distribution term uses ``pseudo_weights`` (the weight of each pseudo-label's bin) instead.
    """
    pred, target = check_pair(pred, target)
    dist_weights = ALIGNMENTS.get(weight_alignment)(weights, pseudo_weights)
    distribution = distribution_term(pred, pseudo, base=base, sorter=sorter,
                                     regularization_strength=regularization_strength, weights=dist_weights)
    distribution, sample = distribution.mean(), apply_weights(elementwise(base)(pred, target), weights).mean()
    total = loss_weight * distribution + sample
    return (total, distribution, sample) if return_terms else total


class DistLoss(nn.Module):
    """Dist Loss built from the training labels: KDE, pseudo-labels per batch size (cached), INV weights.

    A drop-in criterion: ``loss = DistLoss(...)(pred, target)``. A batch of another size (the last one)
    gets its own pseudo-labels. ``gather`` (optional) maps a local [B] tensor to the concatenation over
    all ranks so the distribution term sees the global batch; it must pass gradients back to the local
    slice (e.g. ``torch.distributed.nn.functional.all_gather`` + ``torch.cat``).
    """

    def __init__(self, train_labels, label_range, batch_size: int, *, base="l2", loss_weight=1.0,
                 sorter="soft", regularization_strength=0.1, rounding="official", bw_method=0.5,
                 reweight="inverse", clip=(5, 1000), weight_alignment="pseudo_label", weight_sample_term=True,
                 gather: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        lo, hi, step = (float(v) for v in label_range)
        self.lo, self.step, self.batch_size = lo, step, int(batch_size)
        self.base, self.loss_weight, self.sorter = base, float(loss_weight), sorter
        self.regularization_strength, self.rounding = float(regularization_strength), rounding
        self.weight_alignment, self.weight_sample_term, self.gather = weight_alignment, weight_sample_term, gather
        elementwise(base), ALIGNMENTS.get(weight_alignment)  # fail early on unknown names
        self.grid, self.pmf = label_pmf(train_labels, lo, hi, step, bw_method)
        self.register_buffer("weight_table", self._table(train_labels, lo, hi, step, reweight, clip))
        self._pseudo: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._pseudo_tensors_cache: dict[tuple, tuple[Tensor, Tensor | None]] = {}
        self.pseudo_for(self.batch_size)

    @staticmethod
    def _table(train_labels, lo, hi, step, reweight, clip) -> Tensor | None:
        if reweight in (None, "none"):
            return None
        if reweight != "inverse":
            raise ConfigError(f"unknown Dist Loss reweight {reweight!r} (valid: inverse, none)")
        n_bins = len(label_grid(lo, hi, step))
        bins = np.clip(np.rint((np.asarray(train_labels, dtype=np.float64) - lo) / step), 0, n_bins - 1)
        return torch.as_tensor(inverse_frequency_table(bins.astype(np.int64), n_bins, clip), dtype=torch.float32)

    def pseudo_for(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(pseudo-labels, their bin indices) for a batch of ``n``, computed once per size."""
        if n not in self._pseudo:
            values = pseudo_labels(self.grid, self.pmf, n, self.rounding)
            self._pseudo[n] = (values, np.rint((values - self.lo) / self.step).astype(np.int64))
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
        return lookup(self.weight_table, target, self.lo, self.step).to(target.dtype)

    def distribution(self, pred: Tensor, target: Tensor) -> Tensor:
        """Elementwise, weighted ``loss_weight * l(sort(pred), pseudo)`` over the (gathered) batch."""
        if self.gather is not None:
            pred, target = self.gather(pred), self.gather(target.detach())
        pseudo, pseudo_weights = self._pseudo_tensors(pred.shape[0], pred)
        # only the released misalignment needs the batch samples' own weights
        batch_weights = self._weights(target) if self.weight_alignment == "batch_order" else None
        weights = ALIGNMENTS.get(self.weight_alignment)(batch_weights, pseudo_weights)
        return self.loss_weight * distribution_term(
            pred, pseudo, base=self.base, sorter=self.sorter,
            regularization_strength=self.regularization_strength, weights=weights,
        )

    def sample(self, pred: Tensor, target: Tensor) -> Tensor:
        """Elementwise ``w_i * l(pred_i, target_i)`` (INV-weighted when ``weight_sample_term``)."""
        weights = self._weights(target) if self.weight_sample_term else None
        return apply_weights(elementwise(self.base)(pred, target), weights)

    def terms(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(total, distribution term, sample term), each a mean."""
        pred, target = check_pair(pred, target)
        distribution, sample = self.distribution(pred, target).mean(), self.sample(pred, target).mean()
        return distribution + sample, distribution, sample

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.terms(pred, target)[0]
