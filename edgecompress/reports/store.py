"""The results store: BenchmarkRecords appended to an SQLite file, one row per benchmark stage.

Why SQLite: a run can be killed at any moment (SIGKILL, power, a full disk) and started again.
Each row is written in its own transaction, so the file holds whole rows or none; the row's
``stage_key`` is UNIQUE, so a resumed run can neither duplicate a finished benchmark nor need to
repeat it. The full record is kept as JSON beside a few indexed columns, so adding a field to
BenchmarkRecord needs no migration.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from edgecompress.errors import DataError
from edgecompress.reports.records import BenchmarkRecord

SCHEMA_VERSION = 1
DEFAULT_NAME = "results.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stage_key TEXT NOT NULL UNIQUE,
    recipe TEXT NOT NULL,
    model TEXT NOT NULL,
    variant TEXT NOT NULL,
    runtime TEXT NOT NULL,
    device TEXT NOT NULL,
    threads INTEGER,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX IF NOT EXISTS records_by_recipe ON records (recipe, model, variant);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipe TEXT NOT NULL,
    seconds REAL NOT NULL,
    stages_run INTEGER NOT NULL,
    stages_cached INTEGER NOT NULL,
    machine TEXT NOT NULL,
    finished TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
"""


class ResultsStore:
    """Append-only records keyed by the benchmark stage that produced them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE … COMMIT) below.
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a readable results store: {exc}", "pass a results.sqlite written by `compress pipeline`") from None
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise DataError(f"{self.path} was written by a newer edgecompress (schema {row[0]})", "upgrade edgecompress")

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def has(self, stage_key: str) -> bool:
        return self._db.execute("SELECT 1 FROM records WHERE stage_key = ?", (stage_key,)).fetchone() is not None

    def keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT stage_key FROM records")}

    def add(self, stage_key: str, record: BenchmarkRecord, recipe: str = "") -> bool:
        """Append one record in its own transaction; False if that stage is already stored."""
        return self.add_many([(stage_key, record)], recipe) == 1

    def add_many(self, rows: Iterable[tuple[str, BenchmarkRecord]], recipe: str = "") -> int:
        """Append records all-or-nothing; rows whose stage is already stored are left as they are."""
        values = [
            (key, recipe, r.model, r.variant, r.runtime, r.device, r.threads, r.status, json.dumps(r.to_dict()))
            for key, r in rows
        ]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO records (stage_key, recipe, model, variant, runtime, device, threads, status, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            added = self._db.total_changes - before
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return added

    def log_run(self, recipe: str, seconds: float, stages_run: int, stages_cached: int, machine: str) -> None:
        """One finished `compress pipeline` run: how long it took and how much it computed."""
        self._db.execute("INSERT INTO runs (recipe, seconds, stages_run, stages_cached, machine) VALUES (?, ?, ?, ?, ?)",
                         (recipe, seconds, stages_run, stages_cached, machine))  # fmt: skip

    def runs(self, recipe: str | None = None) -> list[dict]:
        query, args = "SELECT recipe, seconds, stages_run, stages_cached, machine, finished FROM runs", ()
        if recipe is not None:
            query, args = query + " WHERE recipe = ?", (recipe,)
        keys = ("recipe", "seconds", "stages_run", "stages_cached", "machine", "finished")
        return [dict(zip(keys, row, strict=True)) for row in self._db.execute(query + " ORDER BY id", args)]

    def records(self, recipe: str | None = None) -> list[BenchmarkRecord]:
        query, args = "SELECT record FROM records", ()
        if recipe is not None:
            query, args = query + " WHERE recipe = ?", (recipe,)
        return [BenchmarkRecord.from_dict(json.loads(row[0])) for row in self._db.execute(query + " ORDER BY id", args)]

    def recipes(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT recipe FROM records GROUP BY recipe ORDER BY MIN(id)")]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])


def load_runs(path: str | Path, recipe: str | None = None) -> list[dict]:
    """The logged `compress pipeline` runs of a results store (none for a JSON file of records)."""
    path = Path(path)
    path = path / DEFAULT_NAME if path.is_dir() else path
    if path.suffix.lower() == ".json" or not path.exists():
        return []
    with ResultsStore(path) as store:
        return store.runs(recipe)


def load_records(path: str | Path, recipe: str | None = None) -> list[BenchmarkRecord]:
    """Records from a results store, a directory holding one, or a JSON list (``compress bench --json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_NAME
    if not path.exists():
        raise DataError(f"results not found: {path}", "pass a results.sqlite (or its directory) from `compress pipeline`, or a .json")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
            return [BenchmarkRecord.from_dict(d) for d in data if recipe is None or d.get("recipe") == recipe]
        except (ValueError, TypeError, AttributeError) as exc:
            raise DataError(f"{path} is not a JSON list of benchmark records: {exc}", "write it with `compress bench --json`") from None
    with ResultsStore(path) as store:
        if recipe is not None and recipe not in store.recipes():
            raise DataError(f"{path} has no results of recipe '{recipe}'", f"it has: {', '.join(store.recipes()) or 'none'}")
        return store.records(recipe)
