"""Progress bars that suit where they are written: tqdm's live bar on a terminal; on a log file
or CI (not a terminal) a plain line at most every `interval` seconds, because carriage-return
frames fill a file with thousands of overwritten bars."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL = 10.0  # seconds between lines when not on a terminal


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


class LineProgress(tqdm):
    """tqdm that prints one plain line (no carriage return) at most every `interval` seconds,
    and one at the end; what it prints is tqdm's own description of the state."""

    def __init__(self, *args: Any, interval: float = LOG_INTERVAL, **kwargs: Any) -> None:
        self._interval = interval
        self._last_line = -float("inf")
        self._closed_line = False
        # tqdm's own refresh never writes: display() below decides when a line goes out
        super().__init__(*args, mininterval=interval, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing the bar: nothing to clear in a log, and no carriage return
            return False
        now = time.monotonic()
        final = msg is None and self.total is not None and self.n >= self.total
        if self.disable or (now - self._last_line < self._interval and not final) or self._closed_line:
            return True
        self._last_line = now
        self._closed_line = final
        self.fp.write((msg if msg is not None else self.__str__()).strip() + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if not self.disable and not self._closed_line and self.n > 0:
            self._last_line = -float("inf")  # the end state always gets its line
            self.display()
            self._closed_line = True
        self.leave = False  # tqdm must not redraw the bar with a carriage return
        super().close()


def progress(*args: Any, file: IO[str] | None = None, **kwargs: Any) -> tqdm:
    """A progress bar on `file` (default stderr): tqdm on a terminal, LineProgress otherwise."""
    stream = file if file is not None else sys.stderr
    if _is_terminal(stream):
        return tqdm(*args, file=stream, **kwargs)
    return LineProgress(*args, file=stream, **kwargs)
