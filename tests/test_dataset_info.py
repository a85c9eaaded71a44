"""The typed dataset description (``ecgka.catalog.info``): histograms, JSON round trip, the kinds' output."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ecgka.catalog.info import DatasetInfo, LabelHistogram
from ecgka.errors import InputError
from ecgka.labels import LabelGrid, ShotRule

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import fake_manifest  # noqa: E402


def test_histogram_centres_are_the_grid_values_and_json_round_trips():
    grid = LabelGrid.preset("potassium")
    h = LabelHistogram.of(grid, np.array([3.45, 3.55, 4.1], dtype=np.float32))
    assert h.centres().tolist() == grid.centres.tolist() and h.fits(grid)
    assert h.array[grid.bin_index([3.45, 3.55, 4.1])].tolist() == [1, 1, 1] and h.total == 3 and h.n_max == 1
    assert LabelHistogram.from_dict(h.to_dict()) == h
    assert LabelHistogram.from_dict(h.to_dict(counts="labels"), counts="labels") == h
    with pytest.raises(InputError, match="not a label histogram"):
        LabelHistogram.from_dict({"lo": 1.5, "counts": [1]})


def test_manifest_and_metrics_json_give_the_same_description(tmp_path):
    manifest = fake_manifest(tmp_path / "data", shots=ShotRule(many=0.4))
    info = DatasetInfo.from_dict(manifest)
    assert info.kind == "ecg-ka-dir" and info.grid == LabelGrid.from_manifest(manifest)
    assert info.shot_groups == manifest["shot_groups"] and info.n_max == manifest["n_max"]
    assert info.details["exclusions"] == manifest["exclusions"] and info.signal["unit"] == "mV"
    out = info.to_dict()
    for key in ("fingerprint", "label", "counts", "label_histograms", "train_bin_counts", "n_max", "shot_groups",
                "exclusions", "labs_dropped", "signal", "config"):
        assert out[key] == manifest[key], key
    assert DatasetInfo.from_dict(out) == info


def test_shot_override_and_identity():
    grid = LabelGrid.preset("age")
    info = DatasetInfo.from_labels("age-csv", grid, {"train": np.repeat([20.0, 30.0], [150, 10]),
                                                      "val": np.zeros(0), "test": np.array([20.0])}, "abc")
    assert info.counts == {"train": 160, "val": 0, "test": 1} and info.unit == "years"
    assert info.shot_groups["many"] == [20] and info.shot_groups["few"] == [30]
    assert info.with_shots(ShotRule(rule="absolute", many=5, few=1)).shot_groups["many"] == [20, 30]
    assert info.identity() == {"fingerprint": "abc", "digest": "abc", "parent": None}


def test_a_description_off_its_grid_is_refused(tmp_path):
    manifest = fake_manifest(tmp_path / "data")
    bad = {**manifest, "train_bin_counts": {**manifest["train_bin_counts"], "counts": [1, 2, 3]}}
    with pytest.raises(InputError, match="do not match the label grid"):
        DatasetInfo.from_dict(bad)
    with pytest.raises(InputError, match="no 'train_bin_counts'"):
        DatasetInfo.from_dict({k: v for k, v in manifest.items() if k != "train_bin_counts"})
    with pytest.raises(InputError, match="label"):
        DatasetInfo.from_dict({k: v for k, v in manifest.items() if k != "label"})


def test_the_ecg_kind_describes_a_dataset_folder(tmp_path):
    from ecgka.data import kind

    manifest = fake_manifest(tmp_path / "data")
    info = kind.describe(tmp_path / "data")
    assert info.kind == kind.KIND and info.fingerprint == manifest["fingerprint"]


def test_image_options_live_under_data_image():
    from ecgka.errors import ConfigError
    from ecgka.training.config import load_train_config

    cfg = load_train_config(None, ["data.image.root=/x", "data.image.padding=4"])
    assert (cfg.data.image.root, cfg.data.image.padding) == ("/x", 4)
    with pytest.raises(ConfigError, match="image_root"):
        load_train_config(None, ["data.image_root=/x"])


def test_method_display_names_have_one_home():
    from ecgka.losses.methods import display_name
    from ecgka.report.collect import display_name as run_display_name

    assert run_display_name({"method": "balanced_mse", "dist_loss": True}) == "Balanced MSE + Dist Loss"
    assert run_display_name({"method": "dist_loss"}) == display_name("vanilla", True) == "Vanilla + Dist Loss"
    assert run_display_name({"method": "other"}) == "other"
