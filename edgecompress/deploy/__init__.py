"""Deploy bundles for Raspberry Pi, Android and Linux that run without TensorFlow."""

from edgecompress.deploy.bundle import BundleReport, build_bundle
from edgecompress.deploy.emulated import EmulatedCheckReport, check_emulated
from edgecompress.deploy.targets import TARGETS, Target, get_target
from edgecompress.deploy.verify import CheckReport, check_bundle

__all__ = ["TARGETS", "BundleReport", "CheckReport", "EmulatedCheckReport", "Target", "build_bundle", "check_bundle",
           "check_emulated", "get_target"]
