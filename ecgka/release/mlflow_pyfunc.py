"""The MLflow pyfunc model of an ecgka export (``ecgka.release.mlflow_export``); imports mlflow, so it is
imported only where mlflow is used. A saved model refers to this class by name: loading it needs ecgka."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from ecgka.errors import InputError

PARAMS = {"ecg_root": ("string", ""), "batch_size": ("long", 256)}  # name: (MLflow type, default)


class EcgkaPyfunc(mlflow.pyfunc.PythonModel):
    """Scores ``ecgka predict``'s record tables with the export's TorchScript model and card."""

    def load_context(self, context):
        import torch

        from ecgka.data.config import SignalConfig
        from ecgka.release.scoring import Scorer

        card = json.loads(Path(context.artifacts["card"]).read_text())
        signal = SignalConfig.model_validate(json.loads(Path(context.artifacts["signal"]).read_text()))
        model = torch.jit.load(context.artifacts["model"], map_location="cpu").eval()
        self.scorer = Scorer(model, card, (card.get("registry") or {}).get("version"), signal)

    def predict(self, context, model_input, params=None):  # no annotations: MLflow would type-check by them
        return score_table(self.scorer, model_input, params)


def score_table(scorer: Any, records: Any, params: dict[str, Any] | None = None) -> Any:
    """``ecgka predict``'s table for ``records`` (subject_id, study_id, path under ``params["ecg_root"]``)."""
    import pandas as pd

    from ecgka.release.scoring import ID_COLUMNS, score_records

    params = {name: default for name, (_, default) in PARAMS.items()} | dict(params or {})
    if not params["ecg_root"]:
        raise InputError("give params={'ecg_root': DIR}: the root of the WFDB records the rows' paths are under")
    table = records if isinstance(records, pd.DataFrame) else pd.DataFrame(records)
    missing = [c for c in ID_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"records: missing column(s) {', '.join(missing)} (needs {', '.join(ID_COLUMNS)})")
    return score_records(scorer, Path(str(params["ecg_root"])), table.loc[:, list(ID_COLUMNS)].reset_index(drop=True),
                         "cpu", int(params["batch_size"]))
