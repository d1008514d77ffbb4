"""The ``evaluation`` stage."""

from compactkd.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
