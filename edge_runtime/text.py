"""Names made safe for one console line: undecodable bytes and control characters escaped.

A file name is arbitrary bytes on Linux. Python keeps undecodable bytes as lone surrogates
(``surrogateescape``), which cannot be written as UTF-8 (the JSON sink, a UTF-8 console), and a
name may hold a newline or an ANSI escape that would forge a log line. :func:`printable` turns
every such character into a visible escape (``\\xff``, ``\\n``, ``\\x1b``, ``\\u202e``).
"""

from __future__ import annotations

import logging
import os
import unicodedata
from typing import Any

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a raw byte kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\x{code:02x}")
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(value: Any) -> str:
    """``value`` (str, bytes or path) as text with no control, format or undecodable characters."""
    if isinstance(value, bytes | os.PathLike):
        value = os.fsdecode(value)
    text = str(value)
    if text.isprintable():
        return text
    return "".join(_escape(ch) if (unicodedata.category(ch) in _UNSAFE_CATEGORIES
                                   and ch != " ") else ch for ch in text)


class OneLineFormatter(logging.Formatter):
    """A log formatter whose message part can never span lines or carry terminal escapes
    (a file name with a newline cannot forge a DANGER line); tracebacks are left as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = printable(record.message)
        return super().formatMessage(record)


def one_line(exc: BaseException) -> str:
    """An expected failure as one console line; an OS error names its path (``PATH:
    Permission denied``) rather than ``[Errno 13] ...``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return printable(f"{exc.filename}{target}: {exc.strerror}")
    return printable(" ".join(str(exc).split()))
