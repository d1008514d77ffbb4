"""The ``data_processing`` stage."""

from compactkd.pipelines.data_processing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
