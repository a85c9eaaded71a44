"""Every registered method, alone and with Dist Loss: finite loss, gradients, hooks, configs, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecgka.config import load_config
from ecgka.errors import ConfigError
from ecgka.labels import LabelGrid
from ecgka.losses import LossContext, MethodConfig, build_criterion, create_loss, display_name, list_losses

RANGE = (1.5, 10.0, 0.1)
ALL = ["balanced_mse", "conr", "dist_loss", "fds", "lds", "ranksim", "vanilla"]


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    return np.clip(np.round(rng.normal(4.2, 0.6, 2000), 1), 1.5, 10.0)


def build(name, labels, dist=None, **params):
    return create_loss(name, train_labels=labels, label_range=RANGE, batch_size=32, dist_loss=dist, **params)


def training_steps(criterion, labels, epochs=3, batch=32):
    """A tiny encoder + head trained for a few steps through the criterion's hooks; returns the last step."""
    torch.manual_seed(0)
    encoder, head = torch.nn.Linear(6, 8), torch.nn.Linear(8, 1)
    rows = 2 * batch if criterion.requires_views else batch
    target = torch.tensor(labels[:batch], dtype=torch.float32).repeat(rows // batch)
    x = torch.randn(rows, 6) + target[:, None] / 4
    for epoch in range(epochs):
        criterion.on_epoch_start(epoch)
        features = encoder(x)
        features.retain_grad()
        calibrated = criterion.transform_features(features, target, epoch)
        pred = head(calibrated).squeeze(-1) + 4.0
        pred.retain_grad()
        out = criterion(pred, target, features=calibrated, epoch=epoch)
        out["loss"].backward()
        criterion.on_epoch_end(epoch, features.detach(), target)
    return out, pred, features


def test_registered_names():
    assert list_losses() == ALL


@pytest.mark.parametrize("with_dist", [False, True], ids=["alone", "dist"])
@pytest.mark.parametrize("name", ALL)
def test_every_method_trains_on_cpu(name, with_dist, labels):
    criterion = build(name, labels, {"sorter": "auto"} if with_dist else None)
    out, pred, features = training_steps(criterion, labels)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    assert all(not v.requires_grad and torch.isfinite(v) for v in out["terms"].values())
    assert math.isclose(sum(v.item() for v in out["terms"].values()), out["loss"].item(), rel_tol=1e-5)
    assert ("distribution" in out["terms"]) == (with_dist or name == "dist_loss")
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert criterion.display_name == display_name(name, with_dist)


@pytest.mark.parametrize("name", ["ranksim", "conr"])
def test_feature_terms_send_gradients_to_features_directly(name, labels):
    criterion = build(name, labels)
    rows = 64 if criterion.requires_views else 32
    target = torch.tensor(labels[:32], dtype=torch.float32).repeat(rows // 32)
    features = torch.randn(rows, 8, requires_grad=True)
    # noise of a grid step: ConR has negatives (labels >= 2 bins apart whose predictions are within 1 step)
    pred = (target + 0.1 * torch.randn(rows, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    with pytest.raises(ConfigError, match="needs the features"):
        criterion(pred, target)
    criterion(pred, target, features=features)["loss"].backward()
    assert features.grad.abs().sum() > 0


def test_fds_calibrates_only_in_training_mode(labels):
    criterion = build("fds", labels)
    training_steps(criterion, labels, epochs=3)
    features, target = torch.randn(32, 8), torch.tensor(labels[:32], dtype=torch.float32)
    assert not torch.equal(criterion.transform_features(features, target, 3), features)
    criterion.eval()
    assert criterion.transform_features(features, target, 3) is features


def test_dist_loss_method_defaults_are_the_papers(labels):
    criterion = build("dist_loss", labels)
    opts = criterion.dist.options
    assert (opts.base, opts.loss_weight, opts.sorter, opts.rounding) == ("l2", 1.0, "soft", "official")
    assert criterion.dist.weight_table is not None and opts.weight_alignment == "pseudo_label"
    merged = build("dist_loss", labels, {"sorter": "hard", "loss_weight": 2.0})
    assert (merged.dist.options.sorter, merged.dist.options.loss_weight) == ("hard", 2.0)
    assert merged.display_name == "Dist Loss"


def test_dist_loss_options_have_one_spelling(labels):
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) sorter for method 'dist_loss' "
                                          r"\(Dist Loss options go under method.dist_loss\)"):
        build("dist_loss", labels, sorter="hard")
    assert MethodConfig(name="dist_loss").dist_loss.loss_weight == 1.0  # name alone: the default options


def test_each_option_literal_equals_its_registry():
    import typing

    from ecgka.losses import ELEMENTWISE, ROUNDINGS, SORTERS, options
    from ecgka.losses.balanced_mse import ESTIMATORS
    from ecgka.losses.conr import FORMS
    from ecgka.losses.factory import BUILDERS
    from ecgka.losses.methods import METHODS
    from ecgka.losses.weighting import KERNELS, REWEIGHTS

    pairs = [(options.Base, ELEMENTWISE), (options.Sorter, SORTERS), (options.Rounding, ROUNDINGS),
             (options.Kernel, KERNELS), (options.Estimator, ESTIMATORS), (options.ConRForm, FORMS)]
    for literal, registry in pairs:
        assert sorted(typing.get_args(literal)) == registry.names()
    assert sorted(set(typing.get_args(options.Reweight)) - {"none"}) == REWEIGHTS.names()
    assert BUILDERS.names() == METHODS.names()


def test_method_params_are_typed_when_the_config_is_loaded(tmp_path):
    """A typo inside params fails at load time (no data, no torch), naming it and the valid keys."""
    import subprocess
    import sys

    path = tmp_path / "train.yaml"
    path.write_text("method: {name: lds, params: {sigmaa: 1}}\n")
    code = ("import sys; from ecgka.errors import ConfigError; from ecgka.training.config import load_train_config\n"
            f"try: load_train_config({str(path)!r})\n"
            "except ConfigError as e: print(e)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "method: unknown parameter(s) sigmaa for method 'lds' (valid: base, reweight, lds, kernel" in out
    assert out.strip().endswith("False")  # validated without importing torch


def test_conr_and_fds_defaults_in_bins(labels):
    conr = build("conr", labels)
    assert (conr.w, conr.e, conr.t, conr.beta, conr.form) == (1, 0.01, 0.07, 4.0, "clean")
    assert conr.grid.step == 0.1  # w = 1 bin = 0.1 mmol/L, e = 0.01 per bin = 0.1 per mmol/L
    ages = create_loss("conr", train_labels=np.arange(0, 100, dtype=float), label_range=(0, 120, 1), batch_size=8)
    assert (ages.w, ages.e, ages.grid.step) == (1, 0.01, 1.0) and ages.requires_views  # released age defaults
    assert build("conr", labels, form="released").form == "released"
    with pytest.raises(ConfigError, match="form"):
        build("conr", labels, form="paper")
    fds = build("fds", labels, feature_dim=8)
    assert fds.fds.bucket_num == 86 and fds.fds.bucket_start == 0


def test_balanced_mse_param_group_and_sigma_gradient(labels):
    for estimator in ("bmc", "gai", "bni"):
        criterion = build("balanced_mse", labels, estimator=estimator)
        (group,) = criterion.param_groups()
        assert group["lr"] == 1e-2 and group["params"][0] is criterion.noise_sigma
        pred = torch.tensor(labels[:32], dtype=torch.float32) + 0.3
        criterion(pred, torch.tensor(labels[32:64], dtype=torch.float32))["loss"].backward()
        assert criterion.noise_sigma.grad.abs() > 0
    combined = build("balanced_mse", labels, {"sorter": "hard"})
    assert combined.param_groups()[0]["params"][0] is combined.method.noise_sigma


def test_set_gather_reaches_the_distribution_term(labels):
    calls = []

    def gather(x):
        calls.append(x.shape[0])
        return x

    for criterion in (build("dist_loss", labels), build("lds", labels, {})):
        criterion.set_gather(gather)
        target = torch.tensor(labels[:32], dtype=torch.float32)
        criterion(target + 0.1, target)
    assert calls == [32, 32, 32, 32]  # predictions and targets, for both criteria


def test_errors_name_the_valid_choices(labels):
    with pytest.raises(ConfigError, match=r"did you mean 'lds'.*valid: balanced_mse, conr"):
        build("ldss", labels)
    with pytest.raises(ConfigError, match="unknown parameter.*sigmaa"):
        build("lds", labels, sigmaa=2)
    with pytest.raises(ConfigError, match=r"dist_loss.sorterr: unknown key .sorterr.; did you mean 'dist_loss.sorter'\?"):
        build("vanilla", labels, {"sorterr": "hard"})
    with pytest.raises(ConfigError, match="label range"):
        create_loss("vanilla", train_labels=labels, label_range=(1.5, 10.0), batch_size=8)


def test_method_config_from_yaml_with_overrides(tmp_path, labels):
    path = tmp_path / "method.yaml"
    path.write_text("name: lds\nparams: {sigma: 1}\ndist_loss: {sorter: auto}\n")
    cfg = load_config(MethodConfig, path, ["params.ks=3", "dist_loss.loss_weight=0.5"])
    assert cfg.display_name == "LDS + Dist Loss"
    criterion = build_criterion(cfg, LossContext(labels, LabelGrid(*RANGE), 32))
    assert criterion.dist.options.loss_weight == 0.5 and criterion.dist.options.sorter == "auto"
    assert cfg.params.ks == 3 and cfg.params.sigma == 1.0
    with pytest.raises(ConfigError, match="unknown loss method"):
        MethodConfig(name="focal")
    with pytest.raises(ConfigError, match="rounding"):
        load_config(MethodConfig, None, ["dist_loss.rounding=nearest"])
    assert MethodConfig().display_name == "Vanilla"


def test_fds_state_round_trips_into_a_fresh_criterion(labels):
    criterion = build("fds", labels)
    training_steps(criterion, labels, epochs=3)
    fresh = build("fds", labels)
    fresh.load_state_dict(criterion.state_dict())
    features, target = torch.randn(32, 8), torch.tensor(labels[:32], dtype=torch.float32)
    torch.testing.assert_close(fresh.transform_features(features, target, 3),
                               criterion.transform_features(features, target, 3))
    assert int(fresh.fds.epoch) == 2
    assert fresh.fds.running_mean_last_epoch is fresh.fds.running_mean  # released aliasing survives a resume


@pytest.mark.parametrize("name", ["dist_loss", "conr", "ranksim"])
def test_low_precision_inputs_are_computed_in_float32(name, labels):
    criterion = build(name, labels)
    rows = 64 if criterion.requires_views else 32
    target = torch.tensor(labels[:32], dtype=torch.float32).repeat(rows // 32)
    pred32 = target + 0.25 * torch.randn(rows, generator=torch.Generator().manual_seed(0))
    features = torch.randn(rows, 8, generator=torch.Generator().manual_seed(1))
    pred16 = pred32.bfloat16().requires_grad_(True)
    torch.manual_seed(0)
    low = criterion(pred16, target, features=features.bfloat16())
    torch.manual_seed(0)
    high = criterion(pred16.detach().float(), target, features=features.bfloat16().float())
    assert low["loss"].dtype == torch.float32
    torch.testing.assert_close(low["loss"], high["loss"])
    low["loss"].backward()
    assert pred16.grad.dtype == torch.bfloat16 and torch.isfinite(pred16.grad.float()).all()


@pytest.mark.parametrize("with_dist", [False, True], ids=["alone", "dist"])
@pytest.mark.parametrize("name", ["vanilla", "lds", "dist_loss", "balanced_mse", "conr"])
def test_gradcheck_whole_criteria_in_double(name, with_dist, labels):
    criterion = build(name, labels, {"sorter": "hard"} if with_dist else None).double()
    rows = 8 if criterion.requires_views else 6
    g = torch.Generator().manual_seed(0)
    target = torch.tensor(labels[: rows // 2], dtype=torch.float64).repeat(2) if criterion.requires_views \
        else torch.tensor(labels[:rows], dtype=torch.float64)
    pred = (target + 0.3 * torch.randn(rows, generator=g, dtype=torch.float64)).requires_grad_(True)
    features = torch.randn(rows, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, f: criterion(p, target, features=f)["loss"], (pred, features))


@pytest.mark.filterwarnings("ignore:for fds.*meta parameter:UserWarning")  # copying into meta: a no-op
@pytest.mark.parametrize("move", [{"dtype": torch.float64}, {"device": "meta"}], ids=["float64", "meta"])
def test_lazy_fds_statistics_are_created_where_the_criterion_was_moved(move, labels):
    """Resume: criterion.to(device) before load_state_dict; the checkpoint's tensors sit on the CPU (float32).
    The lazily built FDS statistics must follow the criterion, not the checkpoint (CUDA resume crashed)."""
    trained = build("fds", labels)
    training_steps(trained, labels)
    state = trained.state_dict()
    assert not any(key.endswith("_anchor") for key in state)  # older checkpoints have no anchor either
    fresh = build("fds", labels).to(**move)
    assert fresh.fds is None
    fresh.load_state_dict(state)  # strict: the anchor is not part of the state dict
    device, dtype = move.get("device", "cpu"), move.get("dtype", torch.float32)
    for name, buffer in fresh.fds.named_buffers():
        assert buffer.device.type == device, name
        assert buffer.dtype == dtype, name


@pytest.mark.parametrize("double", [False, True], ids=["criterion", "criterion.double()"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("with_dist", [False, True], ids=["alone", "dist"])
@pytest.mark.parametrize("name", ALL)
def test_every_method_accepts_float32_and_float64_inputs(name, with_dist, dtype, double, labels):
    """Predictions, targets and features in float32 or float64, through every hook, for a few epochs."""
    criterion = build(name, labels, {"sorter": "hard"} if with_dist else None)
    criterion = criterion.double() if double else criterion
    rows = 64 if criterion.requires_views else 32
    g = torch.Generator().manual_seed(0)
    target = torch.tensor(labels[:32], dtype=dtype).repeat(rows // 32)
    features = torch.randn(rows, 8, generator=g, dtype=dtype, requires_grad=True)
    pred = (target + 0.1 * torch.randn(rows, generator=g, dtype=dtype)).requires_grad_(True)
    for epoch in range(3):
        calibrated = criterion.transform_features(features, target, epoch)
        out = criterion(pred, target, features=calibrated, epoch=epoch)
        out["loss"].backward()
        criterion.on_epoch_end(epoch, features.detach(), target)
        assert torch.isfinite(out["loss"]) and torch.isfinite(pred.grad).all()
