"""Compression passes, registered by name in ``PASSES``."""

from edgecompress.compress.binarize import BinarizeConfig, BinarizePass
from edgecompress.compress.export import ExportPass, OutputFormat
from edgecompress.compress.passes import PASSES, Pass, PassContext, PassResult
from edgecompress.compress.qat import Preserve, QATConfig, QATPass
from edgecompress.compress.quantize import IOType, QuantizeConfig, QuantizePass, QuantMode

__all__ = [
    "PASSES",
    "BinarizeConfig",
    "BinarizePass",
    "Preserve",
    "QATConfig",
    "QATPass",
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
