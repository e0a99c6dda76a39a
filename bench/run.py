"""`make bench`: run every benchmark in turn; each prints its figures and the command that
reproduces it, and writes its section of docs/benchmarks.md by hand (see that file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "bench_cron.py",
    "scheduler_bench.py",
    "throughput_bench.py",
    "airflow_peer.py",
    "ingest_bench.py",
]


def main(names: list[str]) -> int:
    failed = 0
    for name in names or BENCHMARKS:
        script = HERE / name
        if not script.exists():
            print(f"-- {name}: not present, skipped")
            continue
        print(f"== {name} ==", flush=True)
        failed += subprocess.call([sys.executable, str(script)], cwd=HERE.parent) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
