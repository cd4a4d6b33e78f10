"""Real services for tests (Redis, PostgreSQL, Chromium): found on the machine, or installed
from Debian's packages when the tests run as root (CI does), else the test is skipped with
the command that would install them."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
import urllib.request

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether an HTTP GET of `url` is answered (a web server is up)."""
    try:
        urllib.request.urlopen(url, timeout=timeout_s)
        return True
    except OSError:
        return False


def wait_until(ready, what: str, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Poll `ready()` until true; fail the test naming `what` if `process` exits first (with
    its output, when piped) or after `timeout_s` (then `process` is killed)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"{what}: the process exited ({process.returncode}): "
                        f"{process.communicate()[0]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(0.2)
