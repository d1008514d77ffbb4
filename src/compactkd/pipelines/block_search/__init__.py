"""The ``block_search`` stage."""

from compactkd.pipelines.block_search.pipeline import create_pipeline

__all__ = ["create_pipeline"]
