"""Run a command; write its peak resident memory (KiB) to a file; exit with its status.

Usage: python peak_memory.py OUT_FILE COMMAND...

Linux carries a process's peak RSS into the program it ``exec``s, and the bench holds
torch and a dataset: a stage started straight from it would report at least the bench's
own peak. Started from this small process instead, the stage's figure is its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    out, *command = sys.argv[1:]
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    Path(out).write_text(str(usage.ru_maxrss))  # KiB on Linux
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
