"""Longer property-based fuzzing of the HTTP API than the test suite's (same checks:
tests/support/fuzz.py): every route of the OpenAPI schema with generated requests, in
process, on a fresh data folder; no answer may be a 500, a non-JSON error or slower than
schemathesis's limit, and no job it got accepted may fail as an internal error.

    python bench/fuzz_service.py                    # 200 cases per route, seed 0
    python bench/fuzz_service.py --examples 1000 --seed 7

Prints the cases run per route and the time; writes JSON (default
bench/results/fuzz_service.json). Exits 1 on the first failure, with the request that
caused it (schemathesis prints it as a curl command).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=200, help="cases per route (default 200)")
    p.add_argument("--seed", type=int, default=0, help="0: the same cases every run; else random")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "fuzz_service.json"))
    args = p.parse_args(argv)
    from tests.support.fuzz import fuzz_operations

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nstyle-fuzz-") as tmp:
        try:
            ran, jobs = fuzz_operations(Path(tmp), args.examples, args.seed)
            failure = None
        except Exception as exc:  # the failing case, as Hypothesis and the check said it
            notes = "\n".join(getattr(exc, "__notes__", []))
            ran, jobs, failure = {}, {}, f"{type(exc).__name__}: {exc}\n{notes}".strip()
    seconds = time.perf_counter() - t0
    for route, n in ran.items():
        print(f"{n:6d}  {route}")
    print(f"jobs accepted and run: {sum(jobs.values())} ({', '.join(f'{n} {k}' for k, n in jobs.items())})")
    print(f"{sum(ran.values())} cases over {len(ran)} routes in {seconds:.0f} s: "
          + ("no 500, no non-JSON error, no slow answer, no internal error" if failure is None
             else f"FAILED\n{failure}"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"examples": args.examples, "seed": args.seed,
                                           "cases": ran, "jobs": jobs, "seconds": round(seconds, 1),
                                           "failure": failure}, indent=2) + "\n")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
