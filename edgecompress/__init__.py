"""edgecompress: compress trained Keras models and benchmark every output.

Importing the package sets ``TF_USE_LEGACY_KERAS=1`` (and quiets TensorFlow's logs) before any
TensorFlow import, because TFMOT and Larq only work with Keras 2. TensorFlow itself is imported
lazily, so ``compress --help`` stays fast.
"""

from edgecompress._env import configure_environment

configure_environment()

from edgecompress.api import bench, binarize, cluster, distill, export, load, prune, qat, quantize, run  # noqa: E402
from edgecompress.artifacts import Artifact, Metadata  # noqa: E402
from edgecompress.compress.runner import PassRun  # noqa: E402
from edgecompress.errors import EdgeCompressError  # noqa: E402
from edgecompress.models.inputs import DataPlan, DataSource  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "Artifact", "DataPlan", "DataSource", "EdgeCompressError", "Metadata", "PassRun", "bench", "binarize", "cluster",
    "distill", "export", "load", "prune", "qat", "quantize", "run", "__version__",
]  # fmt: skip
