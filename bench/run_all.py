"""Run every ``bench/bench_*.py`` module's ``main()``, in name order, in one process.

Other parts add their own ``bench_<part>.py`` with a ``main()``; nothing to register.
A benchmark that fails is reported and the others still run; the exit code is 1 then.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks named in ``argv`` (e.g. ``core``), or all of them."""
    wanted = set(sys.argv[1:] if argv is None else argv)
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    failed = []
    for name in names:
        if wanted and name.removeprefix("bench_") not in wanted and name not in wanted:
            continue
        module = importlib.import_module(f"bench.{name}")
        run = getattr(module, "main", None)
        if run is None:
            continue
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            run()
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"=== {name}: {time.perf_counter() - started:.0f} s ===", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
