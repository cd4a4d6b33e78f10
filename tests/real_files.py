"""Where the real instrument files the tests read are: shipped by pinned PyPI packages.

`make install` installs ``pynxtools-spm`` (without its dependencies, see the Makefile) for the
Nanonis files in its NOMAD example uploads. Nothing of it is imported: the files are found
through the package's location only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

STM_EXAMPLE = "nomad/example_uploads/stm"


def pynxtools_spm_folder() -> Path:
    """The installed ``pynxtools_spm`` package folder; a test failure saying how to get it."""
    spec = importlib.util.find_spec("pynxtools_spm")
    if spec is None or spec.origin is None:
        pytest.fail("pynxtools-spm is not installed: run `make install` (it installs the "
                    "pinned wheel with --no-deps for its real Nanonis files)")
    return Path(spec.origin).parent


def nanonis_stm_sxm() -> Path:
    """The real Nanonis STM topograph (.sxm) of pynxtools-spm's STM example upload."""
    found = sorted((pynxtools_spm_folder() / STM_EXAMPLE).rglob("*.sxm"))
    if len(found) != 1:
        pytest.fail(f"expected one .sxm under pynxtools_spm/{STM_EXAMPLE}, found {found}")
    return found[0]
