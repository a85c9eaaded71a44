"""Model registry: ``create_model(name, preset=None, in_channels=None, num_outputs=1, **overrides)``.

A model exposes ``feature_dim``, ``forward_features(x [B, C, T]) -> [B, feature_dim]``, ``head`` (the final
``nn.Linear``) and ``forward(x) -> [B]`` (docs/contracts.md, "Models").

The package imports lazily: ``ecgka.models.options`` (the typed options, presets, ``model_kwargs``) needs no
torch, so a config validates without it.
"""

from __future__ import annotations

from ecgka.lazy import lazy_exports

_EXPORTS = {
    "Net1D": "ecgka.models.net1d",
    "ResNet": "ecgka.models.resnet",
    "MODELS": "ecgka.models.registry",
    "create_model": "ecgka.models.registry",
    "list_models": "ecgka.models.registry",
    "count_parameters": "ecgka.models.registry",
    "DEFAULT_PRESETS": "ecgka.models.options",
    "MODEL_OPTIONS": "ecgka.models.options",
    "PRESETS": "ecgka.models.options",
    "list_presets": "ecgka.models.options",
    "model_kwargs": "ecgka.models.options",
    "check_model_options": "ecgka.models.options",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
