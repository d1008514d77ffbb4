"""The ``reporting`` stage."""

from compactkd.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
