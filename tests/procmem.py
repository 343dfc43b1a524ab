"""Run ``edge-detect`` and learn its own peak resident memory (VmHWM at exit).

``ru_maxrss`` from ``wait4`` is no good here: Linux keeps it across ``fork``+``execve``, so a
child of a pytest process that loaded torch would report torch's memory. VmHWM belongs to the
child's own address space; the wrapper prints it to stderr from an ``atexit`` hook.
"""

from __future__ import annotations

import sys

WRAPPER = """
import atexit, sys
def _hwm():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                sys.stderr.write('VMHWM_KIB ' + line.split()[1] + '\\n')
atexit.register(_hwm)
from edge_runtime.cli import main
main(sys.argv[1:])
"""


def command(*args: str) -> list[str]:
    """The argv that runs edge-detect with ``args`` and reports its peak RSS."""
    return [sys.executable, "-c", WRAPPER, *args]


def split(stderr: str) -> tuple[str, int]:
    """(stderr without the report line, peak RSS in KiB; -1 if it did not get that far)."""
    lines, peak = [], -1
    for line in stderr.splitlines(keepends=True):
        if line.startswith("VMHWM_KIB "):
            peak = int(line.split()[1])
        else:
            lines.append(line)
    return "".join(lines), peak
