"""One rule for progress output: a live bar on a terminal; elsewhere at most one plain line every few seconds.

Why: a tqdm bar redraws itself with carriage returns many times a second; in a log file or CI output
that becomes thousands of frames on one "line". Every bar in the toolkit is made here (``--quiet``
still turns them off where the caller passes ``disable``).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

#: seconds between two plain progress lines when the output is not a terminal
PLAIN_INTERVAL_S = 10.0


class PlainLines(tqdm):
    """tqdm that writes whole lines, at most one every ``PLAIN_INTERVAL_S`` seconds (and one at the end).

    The limit is kept here, not only through ``mininterval``: tqdm also redraws on every
    ``set_description``, which `compress bench` calls once per model × runtime.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(mininterval=PLAIN_INTERVAL_S, maxinterval=PLAIN_INTERVAL_S, miniters=0, ascii=True,
                      dynamic_ncols=False, ncols=100, leave=True)  # fmt: skip
        self._last_line = float("-inf")
        self._closing = False
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "" or self.fp is None:  # tqdm clears its line on close: a log keeps its lines
            return True
        now = time.monotonic()
        if not self._closing and now - self._last_line < PLAIN_INTERVAL_S:
            return True
        self._last_line = now
        self.fp.write((msg or str(self)) + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if not self.disable and not self._closing and self.n:
            self._closing = True  # the last state is always written once
        super().close()


def is_terminal(stream: IO[str] | None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def bar_class(stream: IO[str] | None = None) -> type[tqdm]:
    """tqdm on a terminal, :class:`PlainLines` elsewhere."""
    return tqdm if is_terminal(stream) else PlainLines


def progress_bar(*, file: IO[str] | None = None, disable: bool = False, **kwargs: Any) -> tqdm:
    """A progress bar on ``file`` (stderr by default) following the one rule above."""
    if disable:
        return tqdm(disable=True, **kwargs)
    kwargs.setdefault("leave", False)
    return bar_class(file)(file=file if file is not None else sys.stderr, **kwargs)


def keras_progress():
    """A Keras ``fit`` callback with one bar per run, following the same rule."""
    from tqdm.keras import TqdmCallback

    return TqdmCallback(verbose=0, leave=False, tqdm_class=bar_class(sys.stderr))
