"""Compression passes, registered by name in ``PASSES``."""

from edgecompress.compress.export import ExportPass, OutputFormat
from edgecompress.compress.passes import PASSES, Pass, PassContext, PassResult
from edgecompress.compress.quantize import IOType, QuantizeConfig, QuantizePass, QuantMode

__all__ = [
    "PASSES",
    "ExportPass",
    "IOType",
    "OutputFormat",
    "Pass",
    "PassContext",
    "PassResult",
    "QuantMode",
    "QuantizeConfig",
    "QuantizePass",
]
