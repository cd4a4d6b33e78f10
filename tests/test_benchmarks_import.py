"""Every benchmark at least imports: `make bench` runs them all, and nothing else runs them."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
NAMES = sorted(m.name for m in pkgutil.iter_modules([str(BENCHMARKS)])
               if m.name.startswith("bench_"))


@pytest.mark.parametrize("name", NAMES)
def test_the_benchmark_imports_and_has_a_main(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)


def test_the_benchmarks_are_found():
    assert {"bench_survey", "bench_live_plots", "bench_watch", "bench_soak"} <= set(NAMES)
