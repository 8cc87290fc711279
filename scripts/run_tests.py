"""Run the test suite: everything but the big-memory tests first, then each of those in its own process.

The big-memory parity tests (a 1.8B-parameter model materialised in float32) need most of the
machine's 24 GB, so they run alone after the rest, one process each, and exit codes are combined.
pytest's "no tests collected" (exit 5) counts as success for the big-memory pass only.
"""

from __future__ import annotations

import subprocess
import sys


def main(argv: list[str]) -> int:
    base = [sys.executable, "-m", "pytest", *argv]
    first = subprocess.call([*base, "-m", "not bigmem"])
    second = subprocess.call([*base, "-m", "bigmem"])
    if second == 5:
        second = 0
    return first or second


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
