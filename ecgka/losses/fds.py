"""Feature Distribution Smoothing (Yang et al. 2021), with the released statistics and schedule.

Per label bucket: running mean and unbiased variance of the pooled features, updated once per epoch
from the training features (momentum, factor 0 at the first update epoch), smoothed across buckets with
the normalised LDS kernel (reflect padding). Training features of bucket b are calibrated as
``(z - m1) * sqrt(clamp(v2 / v1, 0.1, 10)) + m2`` (running -> smoothed statistics of the last epoch).

Deviation: ``smooth`` returns a new tensor; the released code wrote into the feature tensor in place,
which breaks autograd in other networks. ``alias_last_epoch=True`` (default) keeps the released aliasing
of the "last epoch" running statistics to the live ones; False snapshots them. Every buffer (kernel
included) is created in torch's default dtype and follows ``.to(dtype)`` together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgka.labels import LabelGrid
from ecgka.losses.base import Criterion, elementwise
from ecgka.losses.weighting import lds_kernel_window


class FDS(nn.Module):
    """Bucketed feature statistics and their smoothed calibration (buckets are integer label bins)."""

    def __init__(self, feature_dim: int, bucket_num=100, bucket_start=3, start_update=0, start_smooth=1,
                 kernel="gaussian", ks=5, sigma=2, momentum=0.9, alias_last_epoch=True):
        super().__init__()
        self.feature_dim, self.bucket_num, self.bucket_start = feature_dim, bucket_num, bucket_start
        self.start_update, self.start_smooth, self.momentum = start_update, start_smooth, momentum
        self.alias_last_epoch, self.half_ks = alias_last_epoch, (ks - 1) // 2
        # every buffer in one dtype, torch's default (float32 unless set otherwise); ``.to(dtype)`` moves all
        window = torch.as_tensor(lds_kernel_window(kernel, ks, sigma), dtype=torch.get_default_dtype())
        self.register_buffer("kernel_window", window / window.sum())
        n = bucket_num - bucket_start
        self.register_buffer("epoch", torch.tensor(float(start_update)))
        for name, fill in [("running_mean", 0.0), ("running_var", 1.0), ("running_mean_last_epoch", 0.0),
                           ("running_var_last_epoch", 1.0), ("smoothed_mean_last_epoch", 0.0),
                           ("smoothed_var_last_epoch", 1.0)]:
            self.register_buffer(name, torch.full((n, feature_dim), fill))
        self.register_buffer("num_samples_tracked", torch.zeros(n))

    def _smoothed(self, stats: Tensor) -> Tensor:
        """Convolve each feature's bucket profile with the kernel (reflect padding)."""
        profile = F.pad(stats.t().unsqueeze(1), (self.half_ks, self.half_ks), mode="reflect")
        return F.conv1d(profile, self.kernel_window.to(profile.dtype).view(1, 1, -1)).squeeze(1).t()

    def update_last_epoch_stats(self, epoch: int) -> None:
        """Freeze the statistics used for calibration (once per epoch, when ``epoch == self.epoch + 1``)."""
        if epoch != int(self.epoch.item()) + 1:
            return
        self.epoch += 1
        copy = (lambda t: t) if self.alias_last_epoch else torch.clone
        self.running_mean_last_epoch = copy(self.running_mean)
        self.running_var_last_epoch = copy(self.running_var)
        self.smoothed_mean_last_epoch = self._smoothed(self.running_mean_last_epoch)
        self.smoothed_var_last_epoch = self._smoothed(self.running_var_last_epoch)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Loading copies buffers; restore the released aliasing once last-epoch statistics exist."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        epoch = state_dict.get(f"{prefix}epoch", self.epoch)  # the checkpoint's (CPU): no device sync, meta-safe
        if self.alias_last_epoch and int(epoch.item()) > self.start_update:
            self.running_mean_last_epoch = self.running_mean
            self.running_var_last_epoch = self.running_var

    def _rows(self, labels: Tensor, label: int) -> Tensor:
        """Rows of bucket ``label``; the edge buckets also take the labels beyond them (released rule)."""
        if label == self.bucket_start:
            return labels <= label
        if label == self.bucket_num - 1:
            return labels >= label
        return labels == label

    def _buckets_present(self, labels: Tensor) -> list[int]:
        present = torch.unique(labels).tolist()
        return [int(v) for v in present if self.bucket_start <= v <= self.bucket_num - 1]

    @torch.no_grad()
    def update_running_stats(self, features: Tensor, labels: Tensor, epoch: int) -> None:
        """Momentum update of the per-bucket mean and variance from one epoch's features [N, F]."""
        if epoch < int(self.epoch.item()):
            return
        if features.shape != (labels.shape[0], self.feature_dim):
            raise ValueError(f"FDS expects features [N, {self.feature_dim}], got {list(features.shape)}")
        features, labels = features.detach().to(self.running_mean), labels.reshape(-1)
        for label in self._buckets_present(labels):
            rows, b = features[self._rows(labels, label)], label - self.bucket_start
            self.num_samples_tracked[b] += rows.shape[0]
            factor = self.momentum
            if factor is None:
                factor = 1 - rows.shape[0] / float(self.num_samples_tracked[b])
            factor = 0.0 if epoch == self.start_update else factor
            var = torch.var(rows, 0, unbiased=rows.shape[0] != 1)
            self.running_mean[b] = (1 - factor) * rows.mean(0) + factor * self.running_mean[b]
            self.running_var[b] = (1 - factor) * var + factor * self.running_var[b]

    def _calibration_buckets(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Row index into the statistics and whether the row is calibrated, without a host sync.

        Labels inside [bucket_start, bucket_num - 1] use their bucket; labels beyond an edge use the edge
        bucket only when that edge label itself is in the batch (the released per-label loop).
        """
        lo, hi = self.bucket_start, self.bucket_num - 1
        inside = (labels >= lo) & (labels <= hi)
        below = (labels < lo) & (labels == lo).any()
        above = (labels > hi) & (labels == hi).any()
        return labels.clamp(lo, hi) - lo, inside | below | above

    def smooth(self, features: Tensor, labels: Tensor, epoch: int) -> Tensor:
        """Calibrated features (a new tensor); identity before ``start_smooth``."""
        if epoch < self.start_smooth:
            return features
        index, ok = self._calibration_buckets(labels.reshape(-1).long())
        m1, v1 = self.running_mean_last_epoch[index], self.running_var_last_epoch[index]
        m2, v2 = self.smoothed_mean_last_epoch[index], self.smoothed_var_last_epoch[index]
        ok = (ok & (v1.sum(1) >= 1e-10)).unsqueeze(1) & (v1 != 0)
        factor = torch.clamp(v2 / torch.where(v1 != 0, v1, torch.ones_like(v1)), 0.1, 10)
        calibrated = (features - m1.to(features.dtype)) * factor.sqrt().to(features.dtype) + m2.to(features.dtype)
        return torch.where(ok, calibrated, features)


class FDSMethod(Criterion):
    """Sample loss plus FDS calibration of the training features (``transform_features``).

    Targets map to buckets by their label bin (``LabelGrid``). ``feature_dim`` may be left out: the statistics
    are then created on the first features seen. Calibration runs only in training mode
    (``criterion.train()``); call ``criterion.eval()`` with the model.
    """

    requires_features = True
    display_name = "FDS"

    def __init__(self, grid: LabelGrid, base: str, feature_dim: int | None = None, **fds_options):
        super().__init__()
        self.grid, self.loss_fn = grid, elementwise(base)
        self.fds_options = fds_options
        self.fds = FDS(feature_dim, **fds_options) if feature_dim is not None else None
        # zero-size, not in the state dict (older checkpoints load unchanged): ``.to(device/dtype)`` moves it,
        # so statistics created lazily land on the criterion's device and dtype, not the checkpoint's
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    def _new_fds(self, feature_dim: int, device: torch.device) -> FDS:
        return FDS(feature_dim, **self.fds_options).to(device=device, dtype=self._anchor.dtype)

    def _fds(self, features: Tensor) -> FDS:
        if self.fds is None:
            self.fds = self._new_fds(features.shape[1], features.device)
        return self.fds

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Create the lazily built statistics (on the criterion's device) before a checkpoint's ``fds.*``
        buffers are loaded into them (resume; the checkpoint's tensors may sit on the CPU)."""
        key = f"{prefix}fds.running_mean"
        if self.fds is None and key in state_dict:
            self.fds = self._new_fds(state_dict[key].shape[1], self._anchor.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def buckets(self, target: Tensor) -> Tensor:
        """Bucket index of each target (its label bin)."""
        return self.grid.bin_index_torch(target.reshape(-1))

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        return {"sample": self.loss_fn(pred, target)}

    def transform_features(self, features: Tensor, target: Tensor, epoch: int) -> Tensor:
        if not self.training:
            return features
        return self._fds(features).smooth(features, self.buckets(target), epoch)

    def on_epoch_end(self, epoch: int, features: Tensor, targets: Tensor) -> None:
        """Released order at the end of an epoch: freeze last-epoch statistics, then update the running ones."""
        fds = self._fds(features)
        if epoch < fds.start_update:
            return
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(features, self.buckets(targets), epoch)
