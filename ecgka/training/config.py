"""The typed training config (``configs/train/*.yaml``): model, method, optimiser, data, device.

Defaults are the paper's ECG-Ka-DIR protocol: 10 epochs, Adam lr 1e-3 (x0.1 at epochs 5 and 8), weight
decay 1e-5, batch 512. A YAML file may ``extends: other.yaml`` (path relative to the file): the parent is
loaded first and the child's keys are merged into it (mappings recursively, everything else replaced).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ecgka.age.options import ImageOptions
from ecgka.config import ConfigModel, load_validated, parse_override, read_yaml, validate_config
from ecgka.errors import ConfigError
from ecgka.losses.config import MethodConfig
from ecgka.resources import find_config


class ModelConfig(ConfigModel):
    """A registered model (``ecgka.models``), a preset and optional constructor overrides."""

    name: str = "net1d"
    preset: str | None = None  # None: the model's default preset ("ecg" for net1d)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _typed_overrides(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Checked against the model's typed options (``ecgka.models.options``) when the config loads."""
        from ecgka.models.options import check_model_options

        if "name" not in info.data or "preset" not in info.data:  # name or preset invalid: reported already
            return v
        try:
            check_model_options(info.data["name"], info.data["preset"], v)
        except ConfigError:  # an unknown model or preset: reported by name where the run starts
            return v
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("overrides.")) from None
        return v


class OptimConfig(ConfigModel):
    """Adam with a step schedule: lr x gamma at each milestone epoch (0-based, MultiStepLR semantics).

    Checked here, before anything is written: lr and gamma positive, weight decay not negative, milestones
    strictly increasing from 1 (a milestone at 0 would just scale lr). Milestones must also fall inside
    the run (< epochs): see :func:`check_milestones`.
    """

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    milestones: list[int] = Field(default_factory=lambda: [5, 8])
    gamma: float = Field(0.1, gt=0)
    # Weight decay of the criterion's own parameter groups (the Balanced MSE noise sigma). None: the same as
    # ``weight_decay`` (Adam's default for every group); 0: no decay on sigma, as the released README runs.
    criterion_weight_decay: float | None = Field(None, ge=0)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(m < 1 for m in value):
            raise ValueError(f"{value}: milestones are epochs counted from 0 at which lr is multiplied by "
                             "gamma; each must be >= 1")
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError(f"{value}: milestones must be strictly increasing")
        return value


class DataConfig(ConfigModel):
    """What every dataset kind reads: which leads to feed (ECG; None: all leads of the dataset), the z-score,
    the signal cache, prefetching and the evaluation batch. Face images (``--data`` a DIR split CSV or a
    packed folder) have their own options under ``image`` (``ecgka.age.options.ImageOptions``)."""

    leads: list[str] | None = None
    zscore: bool = True  # per-sample, per-lead z-score on the device (ECG; images are normalised when decoded)
    cache_dir: str | None = None  # None: DATA_DIR/.cache (falls back to RUN_DIR/cache if read-only)
    prefetch: int = Field(2, ge=0)  # batches prepared ahead by a background thread
    eval_batch_size: int = Field(1024, ge=1)
    # Validation (model selection) on whole eval batches only: the last ``n % eval_batch_size`` validation
    # rows (in split order) are left out of the selection metrics, as the released Dist Loss code's
    # validation loader (drop_last at 512) does. ``ecgka evaluate`` always scores every row.
    val_drop_last: bool = False
    image: ImageOptions = Field(default_factory=ImageOptions)  # root, size, padding, workers


class InitConfig(ConfigModel):
    """Stage 2: start from a stage-1 run (or checkpoint).

    ``head`` (the paper's two-stage scheme for Dist Loss and Balanced MSE): re-initialise the final linear
    layer and freeze everything else. ``backbone`` says how the frozen backbone runs while the head trains:
    ``eval`` (default) with dropout off and BatchNorm statistics fixed, so the head is fit on exactly the
    features it is used with; ``train`` as released (dropout active, BatchNorm statistics keep updating).
    ``full``: load the weights and fine-tune all of them (e.g. a baseline's model fine-tuned with Dist Loss).
    """

    path: str | None = None
    mode: Literal["head", "full"] = "head"
    backbone: Literal["eval", "train"] = "eval"
    checkpoint: Literal["best", "last"] = "best"
    # A stage-1 run trained on another dataset (fingerprints differ) is refused unless this says so (e.g.
    # fine-tuning a registry's champion on a new dataset version); run.json records both fingerprints.
    allow_other_dataset: bool = False

    @property
    def declares_stage_2(self) -> bool:
        """The config says ``init.mode: head`` itself (the paper's two-stage scheme: Dist Loss, Balanced MSE),
        rather than inheriting the default: it needs its stage-1 run (``--init``)."""
        return "mode" in self.model_fields_set and self.mode == "head"

    def check_stage_1(self, source: str = "the config") -> None:
        """A stage-2 config without its stage 1 would train from scratch under the stage-2 method's name."""
        if self.path is None and self.declares_stage_2:
            raise ConfigError(f"{source} is stage 2 of a two-stage method (init.mode: head): pass --init "
                              "STAGE1_RUN (e.g. a vanilla run), or init.mode=full to train it end to end from scratch")

    @property
    def frozen_backbone_in_eval(self) -> bool:
        """Stage 2 trains the head alone on an eval-mode backbone."""
        return self.path is not None and self.mode == "head" and self.backbone == "eval"


class MlflowConfig(ConfigModel):
    """The optional MLflow mirror of the run (``pip install 'ecgka[mlflow]'``; docs/training.md, "MLflow
    mirror"): params, per-epoch metrics and the best epoch's validation metrics, logged to ``tracking_uri``
    (None: no mirror). The run folder stays the source of truth: a mirror that fails warns and training goes on."""

    tracking_uri: str | None = None  # e.g. sqlite:///mlflow.db, http://mlflow.hospital:5000
    experiment: str = "ecgka"
    run_name: str | None = None  # None: the config's ``name`` (a pipeline's training stage: the stage id)


class TrainConfig(ConfigModel):
    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=2)  # global batch; split evenly over DDP ranks
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    # A fresh head's bias starts at the mean training label ("default": PyTorch's init). Same optimum,
    # far fewer steps to leave the trivial region on small runs; see docs/training.md.
    head_bias_init: Literal["train_mean", "default"] = "train_mean"
    # The last partial training batch of each epoch: dropped (ecgka, the Dist Loss code) or kept as a
    # smaller step (false: the released DIR, RankSim, ConR and Balanced MSE code).
    drop_last: bool = True
    # ConR's two views (ecgka/training/views.py): ``noise`` = two Gaussian-noise copies of each (augmented)
    # input, the sample loss on both (ECG as the paper); ``released`` (images only) = the released ConR: the
    # sample loss on the usual augmented view, ConR on two further random crop + flip views (3B rows).
    views: Literal["noise", "released"] = "noise"
    views_noise_std: float = Field(0.1, ge=0)  # Gaussian-noise views (ConR), in z-score units
    # Re-estimate BatchNorm statistics with dropout off before each validation (and so in every saved
    # checkpoint): removes the dropout/BatchNorm variance shift (ecgka/training/bn_recalibration.py).
    # false: the released behaviour.
    recalibrate_bn: bool = True
    recalibrate_bn_samples: int = Field(4096, ge=0)
    selection_metric: Literal["mae", "balanced_mae"] = "balanced_mae"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False  # bf16 autocast (CUDA only; ignored on CPU)
    compile: bool = False  # torch.compile (CUDA only; ignored on CPU)
    gather_predictions: bool = False  # DDP: Dist Loss distribution term over all ranks' predictions
    checkpoint_every_steps: int = Field(0, ge=0)  # 0: only at the end of each epoch
    progress: bool = True  # the epoch's progress bar (on a terminal only) and one summary line per epoch
    tensorboard: bool = True  # TensorBoard scalars in RUN/tensorboard/ when the tensorboard package is installed
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)  # mirror to MLflow (off unless tracking_uri)
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: leave torch's default)
    # How the report groups this run (written to run.json; see docs/report.md): "main" (method comparison),
    # "ablation_<name>" (one ablation table, rows labelled by ``ablation``) or "imbalance" (``variant``).
    # None: "main", or "imbalance" for a dataset under .../variants/<name>.
    group: str | None = None
    ablation: str | None = None
    variant: str | None = None


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def read_config_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, resolving ``extends:`` chains (relative to each file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'extends' cycle ({' -> '.join(p.name for p in (*_seen, path))})")
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(read_config_tree(path.parent / str(parent), (*_seen, path)), data)


def read_resolved_config(path: str | Path) -> TrainConfig:
    """A run's saved ``config.yaml`` (resolved: no ``extends``, no overrides), validated as written. Its
    milestones are not checked against its epochs: a shortened run keeps the inherited ones."""
    return validate_config(TrainConfig, read_yaml(path), source=str(path))


def check_milestones(milestones: list[int], epochs: int, source: str) -> None:
    """Every milestone must fall inside the run (< epochs): one at or after ``epochs`` never fires."""
    late = [m for m in milestones if isinstance(m, int) and m >= epochs]
    if late:
        raise ConfigError(f"{source}: optim.milestones {milestones}: {late} at or after epochs={epochs} would "
                          "never lower lr (milestones count epochs from 0); give milestones below "
                          f"{epochs}, or optim.milestones=[]")


def _check_file_schedules(path: Path) -> None:
    """Each file of an ``extends`` chain that writes ``optim.milestones``: against the epochs it sees."""
    default_epochs = TrainConfig.model_fields["epochs"].default
    while True:
        raw = read_yaml(path)
        optim = raw.get("optim")
        if isinstance(optim, dict) and isinstance(optim.get("milestones"), list):
            epochs = read_config_tree(path).get("epochs", default_epochs)
            if isinstance(epochs, int):
                check_milestones(optim["milestones"], epochs, str(path))
        if raw.get("extends") is None:
            return
        path = (path.parent / str(raw["extends"])).resolve()


def _names_milestones(override: str) -> bool:
    keys = parse_override(override)[0]
    return keys[:2] == ["optim", "milestones"] or keys == ["optim"]


def load_train_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                      override_source: str = "command line") -> TrainConfig:
    """Load a training config (with ``extends``), apply ``key=value`` overrides, validate. ``path`` is a
    file or the name of a shipped config (``ecgka.resources.find_config``).

    Milestones are checked against ``epochs`` where they are written: a config file's against the epochs
    that file sees (its own or inherited), milestones given as an override against the final ``epochs``. Shortening a run
    (``epochs=3`` on the paper's 10-epoch schedule) keeps the inherited milestones, which then never fire.
    """
    if path is not None:
        path = find_config(path, "train")  # a file, or a shipped config's name (``vanilla``, ``age/dist_loss``)
    source = str(path) if path else "train config"
    data = read_config_tree(path) if path is not None else {}  # also refuses an ``extends`` cycle
    if path is not None:
        _check_file_schedules(Path(path).resolve())
    cfg = load_validated(TrainConfig, data, list(overrides), source=source, override_source=override_source)
    given = [o for o in overrides if _names_milestones(o)]
    if given:
        check_milestones(cfg.optim.milestones, cfg.epochs, f"{override_source}: {given[-1]}")
    return cfg
