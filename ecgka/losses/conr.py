"""ConR (Keramati et al. 2024): contrastive regulariser on two augmented views (2B rows).

For anchor i: positives P_i are rows j != i with labels within ``w`` (the other view is always one);
negatives N_i are rows beyond ``w`` whose (detached) predictions are within ``w``, each pushed with weight
``exp(e * |y_i - y_j|)``. With cosine similarities s over temperature t, per anchor
``mean over j in P_i of -log(exp(s_ij) / denominator_i)``; anchors without a negative give 0.

Two forms (``FORMS``, docs/methods.md has the table):
- ``clean`` (default): denominator = sum over P_i of exp(s) + sum over N_i of push_ij exp(s), push weight
  of the anchor, result ``mean_i(weights_i * loss_i)``.
- ``released``: the released function exactly (every non-positive column, the anchor included, adds
  exp(0) = 1 to the denominator; the push weight is the negative's; a weight vector gives
  ``mean(weights) * mean(loss)``), with distances compared in the labels' own dtype.

With a ``grid`` (the method always passes its ``LabelGrid``), ``w`` is a number of bins and ``e`` is per
bin: the clean form compares bin indices (float32 and float64 labels give the same sets) and calls
predictions close when ``|p_i - p_j| <= w`` steps up to the grid's storage tolerance; the released form
uses label units ``w * step`` and ``e / step``. Without a grid, ``w`` and ``e`` are in label units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ecgka.labels import LabelGrid, numpy_dtype
from ecgka.losses.base import Criterion, elementwise, per_sample
from ecgka.names import NameTable

# form name -> (distances and prediction closeness, reduction of the similarities)
FORMS: NameTable = NameTable("ConR form")


def _distances_clean(targets: Tensor, preds: Tensor, w: float, e: float,
                     grid: LabelGrid | None) -> tuple[Tensor, Tensor, float, float]:
    """(label distances in bins, or label units without a grid, float64; prediction closeness; w; e)."""
    if grid is None:
        y, p = targets.detach().to(torch.float64), preds.to(torch.float64)
        return (y[:, None] - y[None, :]).abs(), (p[:, None] - p[None, :]).abs() <= w, w, e
    bins = grid.bin_index_torch(targets)
    p = preds.to(torch.float64) / grid.step
    close = (p[:, None] - p[None, :]).abs() <= w + grid.tolerance(numpy_dtype(preds.dtype))
    return (bins[:, None] - bins[None, :]).abs().to(torch.float64), close, w, e


def _distances_released(targets: Tensor, preds: Tensor, w: float, e: float,
                        grid: LabelGrid | None) -> tuple[Tensor, Tensor, float, float]:
    """The released comparisons: label units, in the labels' own dtype (float rounding decides on a grid)."""
    if grid is not None:
        w, e = w * grid.step, e / grid.step
    y, p = targets.detach(), preds.to(targets.dtype)
    return (y[:, None] - y[None, :]).abs(), (p[:, None] - p[None, :]).abs() <= w, w, e


def _weights(weights, n: int, like: Tensor) -> Tensor:
    """A scalar weight as a 0-d tensor, a per-sample one as [n] (shape-checked)."""
    weights = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    return weights if weights.dim() == 0 else per_sample(weights, n, "weights")


def _reduce_clean(sim: Tensor, pos: Tensor, neg: Tensor, push: Tensor, weights: Tensor) -> Tensor:
    """Positives plus anchor-weighted negatives in the denominator; ``mean_i(weights_i * loss_i)``."""
    n = sim.shape[0]
    anchor_w = weights.expand(n)[:, None].expand(n, n)
    minus_inf = torch.full_like(sim, float("-inf"))
    logits = torch.cat([torch.where(pos, sim, minus_inf),
                        torch.where(neg, sim + push + anchor_w.log(), minus_inf)], 1)
    active = (neg.any(1) & pos.any(1))[:, None]
    log_denom = torch.logsumexp(torch.where(active, logits, torch.zeros_like(logits)), dim=1, keepdim=True)
    per_pair = torch.where(pos & active, log_denom - sim, torch.zeros_like(sim))
    per_anchor = per_pair.sum(1) / pos.sum(1).clamp(min=1)
    return (weights.expand(n) * per_anchor).mean()


def _reduce_released(sim: Tensor, pos: Tensor, neg: Tensor, push: Tensor, weights: Tensor) -> Tensor:
    """Every non-positive column adds exp(0); the negative's weight pushes; ``mean(weights) * mean(loss)``."""
    n = sim.shape[0]
    column_w = weights.expand(n)[None, :].expand(n, n)
    minus_inf = torch.full_like(sim, float("-inf"))
    logits = torch.cat([torch.where(pos, sim, torch.zeros_like(sim)),
                        torch.where(neg, sim + push + column_w.log(), minus_inf)], 1)
    log_denom = torch.logsumexp(logits, dim=1, keepdim=True)
    active = neg.any(1, keepdim=True)
    per_pair = torch.where(pos & active, log_denom - sim, torch.zeros_like(sim))
    per_anchor = per_pair.sum(1) / pos.sum(1).clamp(min=1)
    return weights.mean() * per_anchor.mean()


FORMS.register("clean")((_distances_clean, _reduce_clean))
FORMS.register("released")((_distances_released, _reduce_released))


def conr_loss(features: Tensor, targets: Tensor, preds: Tensor, w: float = 1.0, weights=1.0, t: float = 0.07,
              e: float = 0.01, *, grid: LabelGrid | None = None, form: str = "clean") -> Tensor:
    """ConR over N rows (both views stacked); ``preds`` are used detached; ``weights`` scalar, [N] or [N, 1].

    With ``grid``, ``w`` is in bins and ``e`` per bin; without, both are in label units.
    """
    distances, reduce = FORMS.get(form)
    n = features.shape[0]
    targets, preds = per_sample(targets, n, "targets"), per_sample(preds.detach(), n, "preds")
    label_dist, close, w, e = distances(targets, preds, w, e, grid)
    q = F.normalize(features.reshape(n, -1), dim=1)
    sim = q @ q.t() / t
    within = label_dist <= w
    pos = within & ~torch.eye(n, dtype=torch.bool, device=features.device)
    neg = ~within & close
    return reduce(sim, pos, neg, (e * label_dist).to(sim.dtype), _weights(weights, n, sim))


class ConRMethod(Criterion):
    """Sample loss on both views + beta * ConR (beta 4, t 0.07; ``w`` bins and ``e`` per bin of ``grid``)."""

    requires_features = True
    requires_views = True
    display_name = "ConR"

    def __init__(self, base: str, beta: float, w: int, t: float, e: float, grid: LabelGrid, form: str = "clean"):
        super().__init__()
        self.loss_fn, self.beta, self.w, self.t, self.e = elementwise(base), float(beta), w, float(t), float(e)
        FORMS.get(form)  # an unknown form fails here, naming the valid ones
        self.grid, self.form = grid, form

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        reg = conr_loss(features, target, pred, w=self.w, t=self.t, e=self.e, grid=self.grid, form=self.form)
        return {"sample": self.loss_fn(pred, target), "conr": self.beta * reg}
