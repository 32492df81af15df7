"""`make bench`: runs every benchmarks/bench_*.py in turn, each in its own process, then repeats
the key ratio each printed last. Exit status 1 if any benchmark failed.

    python benchmarks/run_all.py [bench_allreduce ...]   # all, or only the named ones
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str] | None = None) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem in names]
    results, failed = [], []
    for script in scripts:
        print(f"=== {script.stem}", flush=True)
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(script)], cwd=HERE.parent, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
        assert proc.stdout is not None
        last = ""
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                last = line.strip()
        code = proc.wait()
        took = time.perf_counter() - started
        if code != 0:
            failed.append(script.stem)
            last = f"FAILED (exit code {code})"
        results.append(f"{script.stem} ({took:.0f} s): {last}")
    print("=== summary")
    print("\n".join(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
