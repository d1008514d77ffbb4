"""The ``teacher`` stage."""

from compactkd.pipelines.teacher.pipeline import create_pipeline

__all__ = ["create_pipeline"]
