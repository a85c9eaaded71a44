"""The catalog: every file name of a dataset folder, a run folder, a report folder and a pipeline folder.

No other module spells these names; stages, report collection, resume, checkpoint resolution and
evaluation all go through :class:`DatasetDir`, :class:`RunDir`, :class:`ReportDir` and
:class:`PipelineDir`.

Dataset folder (schema version ``DATASET_SCHEMA_VERSION``)::

    DIR/manifest.json                   what the data is, how it was made, its counts (written last)
    DIR/split=train/part-00000.parquet  shards, hive-style: one directory read gives ``split`` as a column
    DIR/split=val/...  DIR/split=test/...
    DIR/exclusions.csv                  the ledger: every record_list.csv row in no split, with its reason
    DIR/labs.arrow                      the version's potassium rows (Arrow IPC): a later version starts here
    DIR/variants/<name>/manifest.json   an imbalance variant: a view of the parent's shards whose train
    DIR/variants/<name>/exclusions.csv  split drops the rows listed in its own ledger
    DIR/.cache/                         memory-mapped signal caches (training)
    DIR/_work/<fingerprint>/            resumable build parts (removed after a build unless kept)

Only shards end in ``.parquet``: ``pyarrow.dataset(DIR, partitioning="hive")`` and DuckDB's
``read_parquet('DIR/**/*.parquet', hive_partitioning=true)`` see exactly the shard rows.

Run folder::

    RUN/config.yaml  RUN/run.json  RUN/log.jsonl  RUN/checkpoints/{last,best}.pt
    RUN/eval/<split>/{predictions.parquet,metrics.json}   RUN/cache/ (signal cache fallback)
    RUN/eval/<fingerprint>/<split>/...  an evaluation on another dataset (``--allow-other-dataset``)

Model registry, export and comparison folders (``catalog.release``)::

    REG/aliases.json  REG/log.jsonl  REG/versions/v0001/{model.json, export/}
    EXPORT/{model.ts | model.onnx, card.json}   COMPARISON/{comparison.md, .csv, .json, gate.json}

Every folder ecgka writes holds ``.ecgka-folder.json`` naming its kind; ``claim_folder`` (catalog.folders)
is the one rule for writing into an existing folder.

A dataset version names its parent (``manifest["parent"]``) and a run records the fingerprint of the
dataset it was trained on (``run.json``), so lineage and a model registry can be read from these files.
"""

from ecgka.catalog.dataset import DATASET_SCHEMA_VERSION, SHARD_GLOB, DatasetDir, WorkDir
from ecgka.catalog.folders import (
           FOLDER_MARKER,
           Claim,
           ClaimState,
           FolderKind,
           claim_folder,
           folder_kind,
           read_marker,
)
from ecgka.catalog.outputs import PipelineDir, ReportDir
from ecgka.catalog.release import ComparisonDir, ExportDir, RegistryDir
from ecgka.catalog.run import RunDir, resolve_weights

__all__ = ["DATASET_SCHEMA_VERSION", "FOLDER_MARKER", "SHARD_GLOB", "Claim", "ClaimState", "FolderKind",
           "claim_folder", "folder_kind", "read_marker", "DatasetDir", "PipelineDir", "ReportDir", "RunDir", "WorkDir",
           "resolve_weights", "ComparisonDir", "ExportDir", "RegistryDir"]
