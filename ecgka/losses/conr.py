"""ConR (Keramati et al. 2024): contrastive regulariser on two augmented views (2B rows).

For anchor i: positives are rows with ``|y_i - y_j| <= w`` (j != i, so the other view is always one);
negatives are rows with ``|y_i - y_j| > w`` whose predictions are close, ``|p_i - p_j| <= w``, each pushed
with weight ``weights_i * exp(e * |y_i - y_j|)``. With cosine similarities s over temperature t,
``loss_i = mean over positives j of -log(exp(s_ij) / (sum_pos exp(s_ip) + sum_neg push_in exp(s_in)))``;
anchors without negatives give 0; the result is ``mean_i(weights_i * loss_i)``. ``w`` and ``e`` are in
label units (defaults for ages: w 1 year, e 0.01 per year).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ecgka.losses.base import Criterion, elementwise


def conr_loss(features: Tensor, targets: Tensor, preds: Tensor, w: float = 1.0, weights=1.0, t: float = 0.07,
              e: float = 0.01) -> Tensor:
    """ConR over N rows (both views stacked); ``preds`` are used detached; ``weights`` scalar or [N]."""
    targets, preds = targets.reshape(-1, 1), preds.detach().reshape(-1, 1).to(targets.dtype)
    n = targets.shape[0]
    anchor_w = torch.as_tensor(weights, dtype=features.dtype, device=features.device).reshape(-1, 1)
    q = F.normalize(features.reshape(n, -1), dim=1)
    sim = q @ q.t() / t
    label_dist = (targets - targets.t()).abs()
    pos = (label_dist <= w) & ~torch.eye(n, dtype=torch.bool, device=features.device)
    neg = (label_dist > w) & ((preds - preds.t()).abs() <= w)
    minus_inf = torch.full_like(sim, float("-inf"))
    push = sim + e * label_dist.to(sim.dtype) + torch.log(anchor_w.expand(n, n))
    n_pos = pos.sum(1)
    active = (neg.any(1) & (n_pos > 0))[:, None]
    logits = torch.cat([torch.where(pos, sim, minus_inf), torch.where(neg, push, minus_inf)], dim=1)
    log_denom = torch.logsumexp(torch.where(active, logits, torch.zeros_like(logits)), dim=1, keepdim=True)
    per_pair = torch.where(pos & active, log_denom - sim, torch.zeros_like(sim))
    per_anchor = per_pair.sum(1) / n_pos.clamp(min=1)
    return (anchor_w.reshape(-1) * per_anchor).mean()


class ConRMethod(Criterion):
    """Sample loss on both views + beta * ConR (beta 4, t 0.07; w and e in label units)."""

    requires_features = True
    requires_views = True
    display_name = "ConR"

    def __init__(self, base: str, beta: float, w: float, t: float, e: float):
        super().__init__()
        self.loss_fn, self.beta, self.w, self.t, self.e = elementwise(base), float(beta), float(w), float(t), float(e)

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        reg = conr_loss(features, target, pred, w=self.w, t=self.t, e=self.e)
        return {"sample": self.loss_fn(pred, target), "conr": self.beta * reg}
