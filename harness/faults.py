"""Whose fault an exception is: the adapter's own code, or the implementation under test.

A check whose call raises gets an ``error`` record: the implementation refused or broke.
But an adapter is code too, and a mistake in it (a wrong keyword, a misspelt name, a
shape mistake in the conversion) says nothing about the implementation; it gets the
status ``adapter_error`` instead, with the frame in the adapter's file in its detail,
and is never counted as a caught bug. The rule, applied to the innermost frame of the
exception's traceback:

* it lies in one of the adapter's files (the variant's source; for a built-in, every
  file of ``harness/variants/``), and
* the adapter raised it itself (a ``raise`` statement there: an adapter that refuses a
  case should declare a limitation instead), or it is a Python-level mistake made there
  (``NameError``, ``AttributeError``, ``TypeError``, ``KeyError``, ``IndexError``,
  ``ValueError``, ``ImportError``, ``ZeroDivisionError``, ``AssertionError``: the adapter's
  code, or a call it made with wrong arguments), or a torch shape error raised by a tensor
  operation written there (``view``, ``reshape``, a matmul of sizes that do not fit).

An exception raised inside the library's own code (its innermost frame is there) is the
library's. An adapter that detects a library misbehaving without raising (a kernel that
logs a failed check and returns memory it never wrote) raises ``LibraryFault`` to report
it: that is the library's error, never the adapter's. The families raise
``AdapterContractError`` when an adapter returns something its contract does not allow.
"""

from __future__ import annotations

import contextlib
import contextvars
import dis
import linecache
import re
import traceback
from pathlib import Path

from harness.status import ADAPTER_ERROR, ERROR

BUILTIN_ADAPTERS = Path(__file__).resolve().parent / "variants"
PYTHON_MISTAKES = (NameError, AttributeError, TypeError, KeyError, IndexError, ValueError, ImportError,
                   ZeroDivisionError, AssertionError)
SHAPE_ERROR = re.compile(r"shape '\[.*\]' is invalid for input of size|size mismatch|must match the size of tensor|"
                         r"cannot be multiplied|Dimension out of range|expanded size of the tensor|"
                         r"number of dims don't match|view size is not compatible", re.IGNORECASE)


class LibraryFault(RuntimeError):
    """Raised by an adapter to report that the implementation misbehaved without raising."""


class AdapterContractError(TypeError):
    """Raised by a family when an adapter returns what its contract does not allow."""


_ADAPTER_SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("adapter_source", default="")


@contextlib.contextmanager
def adapter(source: str):
    """Within the block, exceptions are classified against the adapter file ``source``."""
    token = _ADAPTER_SOURCE.set(source or "")
    try:
        yield
    finally:
        _ADAPTER_SOURCE.reset(token)


def _adapter_files(source: str) -> tuple[Path, ...]:
    if not source or source.startswith("<"):
        return ()
    path = Path(source).resolve()
    return (BUILTIN_ADAPTERS,) if path.is_relative_to(BUILTIN_ADAPTERS) else (path,)


def _in(frame: traceback.FrameSummary, files: tuple[Path, ...]) -> bool:
    where = Path(frame.filename).resolve()
    return any(where == f or (f.is_dir() and where.is_relative_to(f)) for f in files)


def adapter_frame(exc: BaseException, source: str | None = None) -> traceback.FrameSummary | None:
    """The adapter's frame that made the mistake, or None when ``exc`` is not the adapter's."""
    if isinstance(exc, LibraryFault):
        return None
    if isinstance(exc, AdapterContractError):
        frames = traceback.extract_tb(exc.__traceback__)
        return frames[-1] if frames else None
    frames = traceback.extract_tb(exc.__traceback__)
    files = _adapter_files(_ADAPTER_SOURCE.get() if source is None else source)
    if not frames or not files or not _in(frames[-1], files):
        return None
    mistake = (_raised_by_a_statement(exc) or isinstance(exc, PYTHON_MISTAKES)
               or (isinstance(exc, RuntimeError) and SHAPE_ERROR.search(str(exc))))
    return frames[-1] if mistake else None


def _raised_by_a_statement(exc: BaseException) -> bool:
    """Whether the innermost frame raised ``exc`` with a ``raise`` statement (not a call that raised)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    at = next((i for i in dis.get_instructions(tb.tb_frame.f_code) if i.offset == tb.tb_lasti), None)
    return at is not None and at.opname in ("RAISE_VARARGS", "RERAISE")


def classified(exc: BaseException) -> tuple[str, str]:
    """(status, detail) of an exception a variant's call raised: ``adapter_error`` with the
    frame in the adapter's file, or ``error`` with the exception's first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    said = f"{type(exc).__name__}: {text}"
    frame = adapter_frame(exc)
    if frame is None:
        return ERROR, said[:500]
    line = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    return ADAPTER_ERROR, f"adapter error at {frame.filename}:{frame.lineno} in {frame.name}: `{line}`: {said}"[:700]


def erring_everywhere(frame) -> set[str]:
    """Variants whose every record that ran is an undeclared ``error``, over more than one case: an
    adapter that cannot call its library at all looks like this, so it is told apart from caught bugs."""
    ran = frame[(frame["status"] != "unsupported") & (frame["status"] != ADAPTER_ERROR)]
    names = set()
    for variant, group in ran.groupby("variant"):
        if (group["status"] == ERROR).all() and (group["known_failure"] == "").all() and group["case_id"].nunique() > 1:
            names.add(variant)
    return names


def summary_lines(frame) -> list[str]:
    """The end-of-run lines: each variant whose adapter raised, and each that errored on every case."""
    lines = []
    for variant, group in frame[frame["status"] == ADAPTER_ERROR].groupby("variant"):
        lines.append(f"adapter error: {variant} on {group['case_id'].nunique()} case(s), not a caught bug: "
                     f"{group['detail'].iloc[0]}")
    for variant in sorted(erring_everywhere(frame)):
        group = frame[(frame["variant"] == variant) & (frame["status"] == ERROR)]
        lines.append(f"adapter error? {variant} raised on every case it ran ({group['case_id'].nunique()} cases), so its "
                     f"errors are not counted as caught bugs; check its adapter first: {group['detail'].iloc[0]}")
    return lines
