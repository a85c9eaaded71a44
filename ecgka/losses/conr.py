"""ConR (Keramati et al. 2024): contrastive regulariser on two augmented views (2B rows).

For anchor i: positives P_i are rows j != i with labels within ``w`` (the other view is always one);
negatives N_i are rows beyond ``w`` whose (detached) predictions are within ``w``, each pushed with weight
``exp(e * |y_i - y_j|)``. With cosine similarities s over temperature t, per anchor
``mean over j in P_i of -log(exp(s_ij) / denominator_i)``; anchors without a negative give 0.

Two forms (``FORMS``, docs/methods.md has the table):
- ``clean`` (default): denominator = sum over P_i of exp(s) + sum over N_i of push_ij exp(s), push weight
  of the anchor, result ``mean_i(weights_i * loss_i)``; ``weights`` [N] and [N, 1] are the same.
- ``released``: the released function exactly. Every non-positive column, the anchor included, adds
  exp(0) = 1 to the denominator; distances are compared in the labels' own dtype; and the push weight and
  the reduction follow the SHAPE of ``weights``, as the released broadcasting does: a column [N, 1] (what
  the released training code passes) pushes with the anchor's w_i and gives ``mean_i(w_i * loss_i)``; a
  1-D vector [N] pushes with the negative's w_j and gives ``mean(weights) * mean(loss)``; a scalar w gives
  ``w * mean(loss)``.

With a ``grid`` (the method always passes its ``LabelGrid``), ``w`` is a number of bins and ``e`` is per
bin: the clean form compares bin indices (float32 and float64 labels give the same sets) and calls
predictions close when ``|p_i - p_j| <= w`` steps up to the grid's storage tolerance; the released form
uses label units ``w * step`` and ``e / step``. Without a grid, ``w`` and ``e`` are in label units and the
clean form compares float64 differences with a tolerance of a few float32 ulps at the values' magnitude
(``|dy| <= w + tol``), so float32 and float64 labels give the same sets.
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
_ULPS = 8  # label-unit tolerance without a grid: ulps of float32 at the labels' magnitude (as ecgka.labels)


def _distances_clean(targets: Tensor, preds: Tensor, w: float, e: float,
                     grid: LabelGrid | None) -> tuple[Tensor, Tensor, Tensor, float]:
    """(label distances in bins, or label units without a grid, float64; labels within w; prediction
    closeness; e)."""
    if grid is None:
        y, p = targets.detach().to(torch.float64), preds.to(torch.float64)
        label_dist, pred_dist = (y[:, None] - y[None, :]).abs(), (p[:, None] - p[None, :]).abs()
        within = label_dist <= w + _label_tolerance(targets, y, w)
        return label_dist, within, pred_dist <= w + _label_tolerance(preds, p, w), e
    bins = grid.bin_index_torch(targets)
    p = preds.to(torch.float64) / grid.step
    close = (p[:, None] - p[None, :]).abs() <= w + grid.tolerance(numpy_dtype(preds.dtype))
    label_dist = (bins[:, None] - bins[None, :]).abs().to(torch.float64)
    return label_dist, label_dist <= w, close, e


def _label_tolerance(values: Tensor, as64: Tensor, w: float) -> Tensor:
    """``_ULPS`` ulps of float32 (or of the values' dtype, if coarser) at the values' magnitude (and w's),
    in label units: float32 and float64 copies of the same labels then compare alike."""
    eps = float(torch.finfo(torch.float32).eps)
    if values.dtype.is_floating_point:
        eps = max(eps, float(torch.finfo(values.dtype).eps))
    magnitude = torch.clamp(as64.abs().max(), min=abs(float(w))) if as64.numel() else as64.new_tensor(abs(w))
    return _ULPS * eps * magnitude


def _distances_released(targets: Tensor, preds: Tensor, w: float, e: float,
                        grid: LabelGrid | None) -> tuple[Tensor, Tensor, Tensor, float]:
    """The released comparisons: label units, in the labels' own dtype (float rounding decides, with or
    without a grid)."""
    if grid is not None:
        w, e = w * grid.step, e / grid.step
    y, p = targets.detach(), preds.to(targets.dtype)
    label_dist = (y[:, None] - y[None, :]).abs()
    return label_dist, label_dist <= w, (p[:, None] - p[None, :]).abs() <= w, e


def _weights(weights, n: int, like: Tensor) -> Tensor:
    """A scalar weight as a 0-d tensor, a per-sample one as [n] or [n, 1] as given (shape-checked): the
    released form's push weight and reduction depend on that shape."""
    weights = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if weights.dim() == 0:
        return weights
    column = weights.dim() == 2
    weights = per_sample(weights, n, "weights")
    return weights[:, None] if column else weights


def _reduce_clean(sim: Tensor, pos: Tensor, neg: Tensor, push: Tensor, weights: Tensor) -> Tensor:
    """Positives plus anchor-weighted negatives in the denominator; ``mean_i(weights_i * loss_i)``."""
    n = sim.shape[0]
    weights = weights.reshape(-1) if weights.dim() else weights  # [n, 1] and [n] alike
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
    """Every non-positive column adds exp(0); push weight and reduction by the shape of ``weights``.

    The released function multiplies ``weights`` into N x N and N x 1 tensors: a column [N, 1] broadcasts
    along rows (the anchor's weight pushes; ``(weights * loss[:, None]).mean()`` is the weighted mean), a
    vector [N] along columns (the negative's weight pushes; the product is N x N, so the mean factorises
    into ``mean(weights) * mean(loss)``), a scalar everywhere.
    """
    n = sim.shape[0]
    push_w = weights.expand(n, n) if weights.dim() != 1 else weights[None, :].expand(n, n)
    minus_inf = torch.full_like(sim, float("-inf"))
    logits = torch.cat([torch.where(pos, sim, torch.zeros_like(sim)),
                        torch.where(neg, sim + push + push_w.log(), minus_inf)], 1)
    log_denom = torch.logsumexp(logits, dim=1, keepdim=True)
    active = neg.any(1, keepdim=True)
    per_pair = torch.where(pos & active, log_denom - sim, torch.zeros_like(sim))
    per_anchor = per_pair.sum(1) / pos.sum(1).clamp(min=1)
    if weights.dim() == 2:
        return (weights.reshape(n) * per_anchor).mean()
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
    label_dist, within, close, e = distances(targets, preds, w, e, grid)
    q = F.normalize(features.reshape(n, -1), dim=1)
    sim = q @ q.t() / t
    pos = within & ~torch.eye(n, dtype=torch.bool, device=features.device)
    neg = ~within & close
    return reduce(sim, pos, neg, (e * label_dist).to(sim.dtype), _weights(weights, n, sim))


class ConRMethod(Criterion):
    """Sample loss on both views + beta * ConR (beta 4, t 0.07; ``w`` bins and ``e`` per bin of ``grid``)."""

    requires_features = True
    requires_views = True
    display_name = "ConR"
    # True (``views: released``, set by the trainer): rows are [supervised view; view 1; view 2] in thirds;
    # the sample loss covers the first third and ConR the other two (the released ConR training loop)
    released_views = False

    def __init__(self, base: str, beta: float, w: int, t: float, e: float, grid: LabelGrid, form: str = "clean"):
        super().__init__()
        self.loss_fn, self.beta, self.w, self.t, self.e = elementwise(base), float(beta), w, float(t), float(e)
        FORMS.get(form)  # an unknown form fails here, naming the valid ones
        self.grid, self.form = grid, form

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        s = pred.shape[0] // 3 if self.released_views else 0
        reg = conr_loss(features[s:], target[s:], pred[s:], w=self.w, t=self.t, e=self.e, grid=self.grid,
                        form=self.form)
        supervised = slice(0, s) if s else slice(None)
        return {"sample": self.loss_fn(pred[supervised], target[supervised]), "conr": self.beta * reg}
