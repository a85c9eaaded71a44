"""The face-age stand-in: DIR format, imbalanced train / balanced val and test, deterministic, learnable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ecgka.age.dataset import open_age_split
from ecgka.age.standin import CSV_NAME, MAX_AGE, generate_age_standin
from ecgka.age.transforms import AgeTransform
from ecgka.catalog import FOLDER_MARKER
from ecgka.cli import main


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("age") / "standin"
    assert main(["synth-age", "--out", str(out), "--n", "1200", "--seed", "3"]) == 0
    return out


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != FOLDER_MARKER:  # the marker holds its date
            digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_split_shapes(standin):
    table = pd.read_csv(standin / CSV_NAME)
    assert list(table.columns) == ["age", "path", "split"]
    assert table["age"].between(0, MAX_AGE).all()
    train = table[table["split"] == "train"]["age"].value_counts()
    val = table[table["split"] == "val"]["age"].value_counts()
    test = table[table["split"] == "test"]["age"].value_counts()
    # balanced: the same ages in val and test, at most the cap (4) per age
    assert val.sort_index().equals(test.sort_index()) and val.max() <= 4 and len(val) > 50
    assert train.max() >= 10 * max(train.min(), 1)  # imbalanced, peaking in the 30s-40s
    assert 25 <= train.idxmax() <= 45
    with Image.open(standin / table["path"].iat[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"


def test_deterministic_and_refuses_non_empty(standin, tmp_path):
    again = tmp_path / "again"
    generate_age_standin(again, n=1200, seed=3)
    assert _digest(again) == _digest(standin)
    other = tmp_path / "other"
    generate_age_standin(other, n=1200, seed=4)
    assert _digest(other) != _digest(standin)
    assert main(["synth-age", "--out", str(standin)]) == 2


def test_learnable_from_mean_intensity(standin):
    def features(split):
        data = open_age_split(standin / CSV_NAME, standin, split, transform=AgeTransform(32, 4))
        x, y = data.batch(range(len(data)), train=False)
        return x.mean(dim=(1, 2, 3)).numpy(), y.numpy()

    (x_train, y_train), (x_test, y_test) = features("train"), features("test")
    slope, intercept = np.polyfit(x_train, y_train, 1)
    assert np.corrcoef(slope * x_test + intercept, y_test)[0, 1] > 0.9


@pytest.mark.slow
def test_tiny_resnet_learns_standin_through_the_batch_interface(standin):
    import torch

    from ecgka.models import create_model

    torch.manual_seed(0)
    transform = AgeTransform(32, 4)
    train = open_age_split(standin / CSV_NAME, standin, "train", transform=transform)
    test = open_age_split(standin / CSV_NAME, standin, "test", transform=transform)
    model = create_model("resnet50", preset="tiny")
    with torch.no_grad():
        model.head.bias.fill_(float(train.labels.mean()))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        for lo in range(0, len(order), 32):
            x, y = train.batch(order[lo:lo + 32], True, generator)
            loss = torch.nn.functional.l1_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        x, y = test.batch(range(len(test)), False)
        mae = (model(x) - y).abs().mean().item()
    baseline = float(np.abs(y.numpy() - train.labels.mean()).mean())
    assert mae < 0.5 * baseline
