"""BenchmarkRecord: one flat, typed row. Tables, CSV, JSON and plots are renderings of a list of them."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


@dataclass(frozen=True)
class BenchmarkRecord:
    """Frozen: built once, with its names and its change against the float source, by
    ``reports.bench.make_record``; a note added later is a new record (``dataclasses.replace``)."""

    model: str
    variant: str
    format: str
    runtime: str
    runtime_version: str
    device: str
    threads: int | None
    size_bytes: int
    size_gzip_bytes: int
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    throughput_per_s: float | None = None
    peak_memory_bytes: int | None = None
    batch_size: int = 1
    #: the input shape latency was measured at (without batch), when it is not the model's own
    latency_input_shape: tuple[int, ...] | None = None
    runs: int = 0
    metric_name: str | None = None
    metric_value: float | None = None
    metric_delta: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: tuple[str, ...] = ()
    status: str = "ok"
    note: str = ""
    #: with status "error": the exit code of that error (edgecompress/errors.py), for scripts
    error_code: int | None = None
    machine: str = field(default_factory=machine_description)
    timestamp: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "lineage", tuple(self.lineage))
        if self.latency_input_shape is not None:
            object.__setattr__(self, "latency_input_shape", tuple(self.latency_input_shape))

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["lineage"] = list(self.lineage)
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def flat(self) -> dict[str, Any]:
        """One level, for CSV: nested metrics become ``metric_<name>`` columns."""
        row = self.to_dict()
        metrics = row.pop("metrics")
        row["lineage"] = " → ".join(row["lineage"])
        row.update({f"metric_{k}": v for k, v in metrics.items()})
        return row
