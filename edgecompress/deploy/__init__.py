"""Deploy bundles for Raspberry Pi, Android and Linux that run without TensorFlow."""

from edgecompress.deploy.bundle import BundleReport, build_bundle
from edgecompress.deploy.targets import TARGETS, Target, get_target
from edgecompress.deploy.verify import CheckReport, check_bundle

__all__ = ["TARGETS", "BundleReport", "CheckReport", "Target", "build_bundle", "check_bundle", "get_target"]
