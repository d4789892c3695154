"""Sweeps: a recipe (models × chains of passes × targets) parsed, run stage by stage, cached."""

from edgecompress.pipeline.recipe import Recipe, load_recipe
from edgecompress.pipeline.run import PipelineResult, run_pipeline

__all__ = ["PipelineResult", "Recipe", "load_recipe", "run_pipeline"]
