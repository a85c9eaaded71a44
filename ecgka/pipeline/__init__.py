"""Batch jobs: ``pipelines/NAME.yaml`` files chaining synth, build, train, evaluate and report stages.

The runner (``runner``) decides what runs; the stages run in this process one after another or, on Dask,
at once, each in its own process (``executors``, ``stage_process``, ``clusters``); ``status`` reads the
pipeline folder's ``log.jsonl``.
"""

from ecgka.pipeline.runner import PipelineFailed, StageResult, check_pipeline, run_pipeline
from ecgka.pipeline.spec import PipelineSpec, StageSpec, load_pipeline
from ecgka.pipeline.stages import STAGE_KINDS, StageKind

__all__ = ["STAGE_KINDS", "PipelineFailed", "PipelineSpec", "StageKind", "StageResult", "StageSpec",
           "check_pipeline", "load_pipeline", "run_pipeline"]
