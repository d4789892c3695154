"""Run one function in a fresh Python process, with a time limit, and get its JSON result back.

Why not ``multiprocessing``: its "spawn" start method re-imports the caller's ``__main__``. A user
script without an ``if __name__ == "__main__":`` guard then runs again inside the child, and the
child dies before doing its job (every load of a model file from such a script failed that way).
A plain ``python -m edgecompress._child`` process imports nothing of the caller.

The child reads ``{"target": "module:function", "args": [...]}`` on stdin and writes the function's
JSON-able return value to its original stdout; native libraries' chatter on fd 1 is sent to fd 2.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class ChildResult:
    """What became of the child: ``value`` when it returned, else how it failed."""

    value: Any = None
    error: str | None = None  # the function raised: its first message line
    exitcode: int | None = None  # the process died without answering (negative: killed by a signal)
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.exitcode is None and not self.timed_out


def run_in_child(target: str, args: list, timeout: float) -> ChildResult:
    """Call ``target(*args)`` (``"package.module:function"``) in a fresh interpreter."""
    env = dict(os.environ)
    # The caller may have found edgecompress through sys.path edits the child would not see.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    request = json.dumps({"target": target, "args": args})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edgecompress._child"],
            input=request.encode(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        return ChildResult(timed_out=True)
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        return ChildResult(exitcode=done.returncode)
    answer = json.loads(lines[-1])
    return ChildResult(value=answer.get("value"), error=answer.get("error"))


def _serve() -> None:
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # whatever the libraries print cannot corrupt the answer
    request = json.loads(sys.stdin.read())
    module, _, name = request["target"].partition(":")
    try:
        answer = {"value": getattr(importlib.import_module(module), name)(*request["args"])}
    except Exception as exc:  # noqa: BLE001 - any failure goes back to the parent as one line
        text = getattr(exc, "message", None) or str(exc)  # an EdgeCompressError's message, without its hint
        answer = {"error": (text.strip().splitlines() or [type(exc).__name__])[0][:300]}
    with os.fdopen(answer_fd, "w") as out:
        out.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    _serve()
