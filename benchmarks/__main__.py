"""`python -m benchmarks [bench_x ...]`: run every `benchmarks/bench_*.py`, or those named."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(names: list[str]) -> None:
    here = Path(__file__).parent
    found = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    unknown = set(names) - set(found)
    if unknown:
        raise SystemExit(f"unknown benchmarks {sorted(unknown)}; known: {found}")
    for name in names or found:
        print(f"== {name}")
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
