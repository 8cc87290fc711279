"""Run the test suite: everything but the big-memory tests on two workers, then those alone.

Most of the suite's time is single-threaded work (drawing fixture weights, ONNX export tracing), so
two pytest-xdist workers with one torch thread each use both cores; `--dist loadfile` keeps each
test file on one worker, so module-scoped fixtures (a materialised parity model) are built once.
The big-memory parity tests (a 1.8B-parameter model in float32) need most of the machine's 24 GB,
so they run afterwards in their own process. pytest's "no tests collected" (exit 5) counts as
success for that second pass only.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    workers = os.environ.get("TOKENZOO_TEST_WORKERS", "2")
    env = dict(os.environ)
    env.setdefault("TOKENZOO_TEST_THREADS", "1" if workers != "0" else "2")
    # The slowest tests in every log: the suite must stay under 20 minutes on 2 cores.
    base = [sys.executable, "-m", "pytest", "--durations=25", *argv]
    parallel = ["-n", workers, "--dist", "loadfile"] if workers != "0" else []
    first = subprocess.call([*base, *parallel, "-m", "not bigmem"], env=env)
    env["TOKENZOO_TEST_THREADS"] = "2"
    second = subprocess.call([*base, "-m", "bigmem"], env=env)
    if second == 5:
        second = 0
    return first or second


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
