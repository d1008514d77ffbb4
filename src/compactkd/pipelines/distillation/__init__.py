"""The ``distillation`` stage."""

from compactkd.pipelines.distillation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
