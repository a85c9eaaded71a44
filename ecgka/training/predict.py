"""``ecgka.training.predict``: the contract's function, also importable as this module.

The implementation lives in ``ecgka.training.prediction``. Because importing this submodule would make
``ecgka.training.predict`` the module instead of the function, the module itself is callable: both
``from ecgka.training import predict`` and ``from ecgka.training.predict import predict`` give something
that is called as ``predict(run_dir, data_dir, split, checkpoint="best")``.
"""

from __future__ import annotations

import sys
import types

from ecgka.training.prediction import predict, predict_arrays

__all__ = ["predict", "predict_arrays"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
