"""Real services for tests (Redis, PostgreSQL, Chromium): found on the machine, or installed
from Debian's packages when the tests run as root (CI does), else the test is skipped with
the command that would install them."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

_APT_UPDATED = False


def debian_program(program: str, package: str, *, also: tuple[str, ...] = ()) -> str:
    """The path of `program`, installing Debian's `package` (and `also`) when root.

    `program` may be a glob (e.g. ``/usr/lib/postgresql/*/bin/initdb``) for packages that
    put their programs off the PATH. Skips the calling test when it cannot be had.
    """
    found = _find(program)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install(package, *also)
        found = _find(program)
    if found is None:
        pytest.skip(f"needs {program}: install it with "
                    f"`apt-get update && apt-get install -y {' '.join((package, *also))}`")
    return found


def _find(program: str) -> str | None:
    if "/" in program:
        matches = sorted(glob.glob(program))
        return matches[-1] if matches else None
    return shutil.which(program)


def _apt_install(*packages: str) -> None:
    global _APT_UPDATED
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _APT_UPDATED:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False,
                       capture_output=True, timeout=600)
        _APT_UPDATED = True
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                   env=env, check=False, capture_output=True, timeout=900)
