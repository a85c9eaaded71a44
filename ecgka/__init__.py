"""ecgka: ECG potassium regression with Dist Loss and imbalanced-regression baselines.

Stages (each a CLI command and a Python API): ``synth`` (MIMIC-IV stand-in), ``build`` (ECG-Ka-DIR
shards), ``train`` (Net1D + method), ``evaluate`` (metrics), ``report`` (clinical HTML report), and
``run`` (a pipeline of stages). Importing the package has no side effects.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
