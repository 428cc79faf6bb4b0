"""Quieting native (C++) code that writes straight to file descriptor 2."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """Send fd 2 to /dev/null while the block runs. Python exceptions still propagate;
    only log lines printed by native code (and Python's own stderr) are dropped."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class NativeLog:
    """What native code wrote to fd 2 during a ``native_stderr_captured`` block."""

    text = ""

    def failed_checks(self) -> list[str]:
        """ExecuTorch's ``ET_CHECK_MSG``-style lines (``[file.cpp:N] Check failed (...): ...``): a kernel
        that reports a refused input this way, and returns, has not written its output."""
        return [line.strip() for line in self.text.splitlines() if "Check failed" in line]


@contextlib.contextmanager
def native_stderr_captured():
    """Like ``native_stderr_silenced``, but keep what was written: the yielded ``NativeLog``'s
    ``text`` holds it once the block ends (also when it raises)."""
    import tempfile

    log = NativeLog()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 2)
            yield log
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            log.text = sink.read().decode(errors="replace")
