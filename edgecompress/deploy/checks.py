"""Pre-deploy checks: what will go wrong on the device, found before copying anything.

Each finding names the fix. The op check uses the pinned interpreter itself when it is the
installed one: its schema gives the builtin ops it knows, and loading the model in it finds
missing kernels and op versions (a converter newer than the runtime writes versions it lacks).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import metadata as importlib_metadata

from edgecompress._env import native_output_silenced
from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.compress.tflite_graph import BOUNDARY_OPS, OpInfo, estimate_macs, operators
from edgecompress.deploy.targets import LITERT_PIN, REALTIME_MS, Target

log = logging.getLogger(__name__)

LCE_PREFIX = "Lce"
FLEX_PREFIX = "Flex"
#: ops whose output type tells whether the model computes in integers
COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})"

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class ModelFacts:
    """What the checks and the bundle need to know about a .tflite, read once."""

    ops: tuple[OpInfo, ...]
    macs: int
    integer: bool
    binarized: bool
    input_dtype: str
    output_dtypes: tuple[str, ...]

    @property
    def op_names(self) -> set[str]:
        return {op.name for op in self.ops}


def model_facts(artifact: Artifact, input_dtype: str, output_dtypes: tuple[str, ...]) -> ModelFacts:
    data = artifact.path.read_bytes()
    ops = tuple(operators(data))
    compute = [op for op in ops if op.name in COMPUTE_OPS]
    integer = bool(compute) and all(t in ("INT8", "INT16") for op in compute for t in op.output_types[:1])
    binarized = artifact.format is ModelFormat.LCE_TFLITE or any(op.name.startswith(LCE_PREFIX) for op in ops)
    return ModelFacts(ops, sum(estimate_macs(data).values()), integer, binarized, input_dtype, output_dtypes)


def run_checks(artifact: Artifact, facts: ModelFacts, target: Target) -> list[Finding]:
    findings = [*_op_findings(artifact, facts, target), *_type_findings(artifact, facts, target)]
    speed = _speed_finding(artifact, facts, target)
    return findings + ([speed] if speed else [])


def _op_findings(artifact: Artifact, facts: ModelFacts, target: Target) -> list[Finding]:
    names = facts.op_names
    findings = []
    flex = sorted(n for n in names if n.startswith(FLEX_PREFIX))
    if flex:
        findings.append(Finding(
            "flex-ops",
            f"the model uses TensorFlow (Flex / SELECT_TF_OPS) op(s) {', '.join(flex)}, which the LiteRT and "
            "tflite-runtime wheels do not include",
            "replace those layers with TFLite builtins and convert again without SELECT_TF_OPS",
        ))
    lce = sorted(n for n in names if n.startswith(LCE_PREFIX))
    if lce and not target.lce_wheel:
        findings.append(Finding(
            "lce-runtime",
            f"binarized model (op(s) {', '.join(lce)}) but no Larq Compute Engine runtime installs on {target.name} "
            "with pip; ai-edge-litert cannot run these ops",
            "build LCE's runtime for the device from source (docs.larq.dev/compute-engine/build), "
            "or deploy an int8 model: compress quantize MODEL.h5 --calib DATA",
        ))
    custom = sorted(n for n in names - {op for op in names if op.startswith((LCE_PREFIX, FLEX_PREFIX))}
                    if not n.isupper() and not n.isdigit())
    if custom:
        findings.append(Finding(
            "custom-ops",
            f"custom op(s) {', '.join(custom)} have no kernel in the target runtime",
            "register the kernel in the device app, or replace those layers with builtin ones",
        ))
    if not facts.binarized and not flex and not custom:
        findings.extend(_pinned_runtime_findings(artifact, names))
    return findings


def _pinned_runtime_findings(artifact: Artifact, names: set[str]) -> list[Finding]:
    """Builtins checked against the pinned ai-edge-litert, if that exact version is installed here."""
    package, pinned = LITERT_PIN.split("==")
    try:
        installed = importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        installed = None
    if installed != pinned:
        log.info("ops not checked against %s: installed is %s", LITERT_PIN, installed)
        return [Finding(
            "ops-unchecked",
            f"ops were not checked against the pinned runtime {LITERT_PIN} (installed here: {installed or 'none'})",
            f"pip install {LITERT_PIN}, or run `compress deploy --check DIR` after building",
        )]
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    known = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    unknown = sorted(n for n in names if (n.isupper() or n.isdigit()) and n not in known and n not in BOUNDARY_OPS)
    if unknown:
        return [Finding(
            "unknown-builtins",
            f"op(s) {', '.join(unknown)} are newer than {LITERT_PIN}",
            "convert with a TensorFlow release matching the runtime, or replace those layers",
        )]
    try:
        with native_output_silenced():
            Interpreter(model_path=str(artifact.path)).allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        text = str(exc)
        missing = re.findall(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'", text)
        detail = ", ".join(f"{op} v{v}" for op, v in missing) or text.splitlines()[0][:200]
        return [Finding(
            "missing-kernels",
            f"{LITERT_PIN} cannot load the model: {detail}",
            "convert with a TensorFlow release matching the runtime, or replace those layers",
        )]
    return []


def _type_findings(artifact: Artifact, facts: ModelFacts, target: Target) -> list[Finding]:
    findings = []
    if "uint8" in (facts.input_dtype, *facts.output_dtypes) and target.arm32_possible:
        findings.append(Finding(
            "uint8-io",
            f"uint8 input/output: on 32-bit ARM ({target.name} with an armv7 image) LiteRT takes slower uint8 kernels "
            "and an extra requantize step",
            "quantize again with --io int8 (or --io float), and prefer a 64-bit OS image",
        ))
    if not facts.integer and not facts.binarized and target.name in ("rpi", "android"):
        mode = next((s.params.get("mode") for s in reversed(artifact.metadata.lineage) if "mode" in s.params), None)
        how = f"{mode} quantization computes in float" if mode else "it computes in float32"
        findings.append(Finding(
            "float-model",
            f"this is not an int8 model ({how}); on ARM CPUs int8 is typically 2-4x faster and 4x smaller",
            "compress quantize MODEL.h5 --mode int8 --calib DATA, and deploy that file",
        ))
    return findings


def _speed_finding(artifact: Artifact, facts: ModelFacts, target: Target) -> Finding | None:
    if not facts.macs:
        return None
    gmacs = target.int8_gmacs if facts.integer else target.float_gmacs
    estimate_ms = facts.macs / (gmacs * 1e9) * 1000.0
    if estimate_ms <= REALTIME_MS:
        return None
    shape = artifact.metadata.inputs[0].shape if artifact.metadata.inputs else ()
    side = ""
    if len(shape) == 3 and shape[0]:
        # Conv arithmetic grows with the pixel count, so the side scales with the square root.
        fit = int(shape[0] * (REALTIME_MS / estimate_ms) ** 0.5) // 8 * 8
        side = f"; an input of about {max(fit, 8)}x{max(fit, 8)} px would fit"
    return Finding(
        "too-slow",
        f"about {facts.macs / 1e9:.2f} GMACs per inference: roughly {estimate_ms:.0f} ms on {target.name} "
        f"(planning figure {gmacs:g} GMAC/s), slower than {1000 / REALTIME_MS:.0f} fps{side}",
        "use a smaller input size or a narrower model (alpha), and measure with bench.py on the device",
    )
