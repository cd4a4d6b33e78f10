"""`export` and `serve` as a user meets them in a shell: a mistyped catalog, an unknown run,
a read-only catalog (closed cleanly, or left by a killed survey), a bad database URI. Each
case is a real `deepspm-bluesky` process; they run side by side to share the imports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "deepspm-bluesky")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_only(directory: Path) -> list[str]:
    """Make `directory` read-only for everyone, root included; the command undoing it.

    Root ignores permission bits, so as root the folder is bind-mounted read-only onto
    itself (a read-only mount, as an archive or a shared instrument disk is).
    """
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(directory)], check=True)
        return ["chmod", "-R", "u+w", str(directory)]
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(directory), str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"root cannot bind-mount read-only here: {mounted.stderr.strip()}")
    return ["umount", str(directory)]


# A survey of N images into a catalog, in a process that then exits, or is killed (kill -9)
# with its catalog open: then SQLite's write-ahead logs stay beside the databases, holding
# what was written since the last checkpoint.
SURVEY_THEN_END = """
import os, signal, sys
from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.devices import simulated_stm
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.session import survey_session
session = survey_session(open_catalog(sys.argv[1]), progress=False)
session.engine(autonomous_survey(simulated_stm(seed=3), max_images=int(sys.argv[2]),
                                 classifier=lambda image: 0.95))
session.writer.close()
if sys.argv[3] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def survey_then(end: str, catalog: Path, images: int) -> None:
    """Survey `images` images into `catalog` in a process that ends by `end` (exit, kill)."""
    survey = subprocess.run([sys.executable, "-c", SURVEY_THEN_END, str(catalog), str(images),
                             end], capture_output=True, text=True)
    assert survey.returncode == (-signal.SIGKILL if end == "kill" else 0), survey.stderr


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """{case: (stderr, stdout, exit status)} of every command, run at the same time."""
    root = tmp_path_factory.mktemp("cli")
    catalog, killed = root / "archives" / "archive", root / "archives" / "killed"
    survey_then("exit", catalog, 2)
    survey_then("kill", killed, 3)
    undo = read_only(root / "archives")
    commands = {
        "missing catalog": ["export", "latest", "--catalog", str(root / "mistyped"),
                            "--out", str(root / "out1")],
        "unknown run": ["export", "no-such-run", "--catalog", str(catalog),
                        "--out", str(root / "out2")],
        "read-only catalog": ["export", "latest", "--catalog", str(catalog), "--format", "gwy",
                              "--out", str(root / "out3")],
        "killed catalog": ["export", "latest", "--catalog", str(killed), "--format", "gwy",
                           "--out", str(root / "out4")],
        "not postgresql": ["serve", "--database", "mysql://user:hunter2@127.0.0.1/db",
                           "--catalog", str(root / "served")],
        "no postgresql there": ["serve", "--database",
                                f"postgresql://user:hunter2@127.0.0.1:{closed_port()}/db",
                                "--catalog", str(root / "served"), "--port",
                                str(closed_port())],
    }
    try:
        running = {case: subprocess.Popen([CLI, *args], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)
                   for case, args in commands.items()}
        results = {case: (*reversed(process.communicate(timeout=300)), process.returncode)
                   for case, process in running.items()}
        for name, folder in (("catalog", catalog), ("killed", killed)):
            results[f"{name} unchanged"] = sorted(p.name for p in folder.iterdir())
    finally:
        subprocess.run(undo, check=True)
    results["root"] = root
    return results


@pytest.mark.parametrize(("case", "message"), [
    ("missing catalog", "error: no catalog in "),
    ("unknown run", "error: no run 'no-such-run' in the catalog"),
    ("not postgresql", "error: the database must be a postgresql://user@host:port/name URI"),
    ("no postgresql there", "error: cannot open the catalog database postgresql://user:***@"),
])
def test_an_expected_failure_is_one_line_and_exit_status_2(outcomes, case, message):
    err, out, status = outcomes[case]
    assert status == 2, (out, err)
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in out + err and "hunter2" not in out + err


def test_a_failed_export_or_serve_creates_no_folder(outcomes):
    root = outcomes["root"]
    assert not (root / "mistyped").exists()
    assert not (root / "out1").exists()
    assert not (root / "served").exists()  # nor does serve, when its database is wrong


def test_a_read_only_catalog_is_read_and_exported_unchanged(outcomes):
    err, out, status = outcomes["read-only catalog"]
    assert status == 0, err
    (written,) = (outcomes["root"] / "out3").glob("*.gwy")
    assert f"wrote {written} (2 images)" in out
    assert outcomes["catalog unchanged"] == ["catalog.db", "data", "tables.db"]


def test_a_read_only_catalog_whose_survey_was_killed_is_read_through_its_logs(outcomes):
    err, out, status = outcomes["killed catalog"]
    assert status == 0, err
    (written,) = (outcomes["root"] / "out4").glob("*.gwy")
    assert f"wrote {written} (3 images)" in out
    assert outcomes["killed unchanged"] == ["catalog.db", "catalog.db-shm", "catalog.db-wal",
                                            "data", "tables.db", "tables.db-shm",
                                            "tables.db-wal"]
