"""Compression passes, registered by name in ``PASSES`` and run by ``runner.run_pass``.

Pass modules are imported when a pass is first looked up, never here: checking a recipe of exports
and quantizations must not import TFMOT or Larq.
"""

from edgecompress.compress.passes import PASSES, Pass, PassContext, PassReport, PassResult

__all__ = ["PASSES", "Pass", "PassContext", "PassReport", "PassResult"]
