"""Benchmark records and their renderings."""

from edgecompress.reports.records import BenchmarkRecord
from edgecompress.reports.tables import fastest_summary, markdown_table, to_csv, to_json

__all__ = ["BenchmarkRecord", "fastest_summary", "markdown_table", "to_csv", "to_json"]
