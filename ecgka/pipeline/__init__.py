"""Batch jobs: ``pipelines/NAME.yaml`` files chaining synth, build, train, evaluate and report stages."""

from ecgka.pipeline.runner import StageResult, check_pipeline, run_pipeline
from ecgka.pipeline.spec import PipelineSpec, StageSpec, load_pipeline
from ecgka.pipeline.stages import STAGE_KINDS, StageKind

__all__ = ["STAGE_KINDS", "PipelineSpec", "StageKind", "StageResult", "StageSpec", "check_pipeline", "load_pipeline",
           "run_pipeline"]
