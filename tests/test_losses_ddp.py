"""Dist Loss over two real DDP ranks (gloo, CPU): the gathered distribution term has the gradient of the
global term once DDP averages gradients, which is the documented ``set_gather`` recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgka.losses import create_loss

RANGE = (1.5, 10.0, 0.1)
LOCAL, WORLD = 16, 2


def labels_and_batch():
    rng = np.random.default_rng(0)
    labels = np.clip(np.round(rng.normal(4.2, 0.6, 2000), 1), 1.5, 10.0)
    pred = torch.tensor(4.2 + 0.7 * rng.standard_normal(LOCAL * WORLD))
    target = torch.tensor(labels[: LOCAL * WORLD])
    return labels, pred, target


def rank_main(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_fn

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        labels, pred, target = labels_and_batch()
        criterion = create_loss("dist_loss", train_labels=labels, label_range=RANGE, batch_size=LOCAL,
                                dist_loss={"sorter": "hard"}).double()
        criterion.set_gather(lambda x: torch.cat(dist_fn.all_gather(x)))
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        local = pred[rows].clone().requires_grad_(True)
        out = criterion(local, target[rows])
        out["loss"].backward()
        torch.save({"grad": local.grad / WORLD, "distribution": out["terms"]["distribution"]},
                   f"{out_dir}/rank{rank}.pt")  # / WORLD: DDP averages gradients over the ranks
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_distribution_term_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    labels, pred, target = labels_and_batch()
    single = create_loss("dist_loss", train_labels=labels, label_range=RANGE, batch_size=LOCAL * WORLD,
                         dist_loss={"sorter": "hard"}).double()
    global_pred = pred.clone().requires_grad_(True)
    # The global objective: the distribution term over all rows plus the mean of the per-rank sample means.
    distribution = single.dist.distribution(global_pred, target).mean()
    sample = single.dist.sample(global_pred, target).mean()
    (distribution + sample).backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), global_pred.grad)
    for r in ranks:
        torch.testing.assert_close(r["distribution"], distribution.detach())
