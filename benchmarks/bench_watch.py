"""The watch page under 20 viewers: per-refresh latency against the 200 ms goal, and the page's
resident memory after a 1 000-image and a 10 000-image survey (it must not grow with length).

Real processes on loopback: `deepspm-bluesky watch` over a catalog folder, `deepspm-bluesky
survey` (simulator, shipped classifier) writing into it, and 20 viewer threads here, each
refreshing once a second as the page does when a survey changed: ``/api/status``, then
``/api/survey`` and the latest image's PNG.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SHORT, LONG = 1000, int(os.environ.get("DEEPSPM_WATCH_IMAGES", "10000"))
VIEWERS = 20
GOAL_S = 0.200  # issue 14: each refresh under 200 ms on loopback
VIEW_S = 15.0  # seconds of viewing measured after each survey
CLI = Path(sys.executable).parent / "deepspm-bluesky"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resident_mb(pid: int) -> float:
    """VmRSS of a process, in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Viewer(threading.Thread):
    """One browser's worth of refreshes, once a second, timed whole."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.latencies: list[float] = []

    def get(self, connection: http.client.HTTPConnection, path: str) -> bytes:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return body

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        time.sleep(random.uniform(0, 1) if not self.stop.is_set() else 0)  # not in lockstep
        while True:
            started = time.perf_counter()
            status = json.loads(self.get(connection, "/api/status"))
            self.get(connection, "/api/survey")
            if status["images"]:
                self.get(connection, f"/api/runs/{status['uid']}/images/"
                                     f"{status['images'] - 1}.png")
            elapsed = time.perf_counter() - started
            self.latencies.append(elapsed)
            if self.stop.wait(max(0.0, 1.0 - elapsed)):
                return


def view(port: int, seconds: float) -> np.ndarray:
    """Per-refresh latencies of `VIEWERS` viewers over `seconds`, after one refresh that
    reads the survey's tables and renders its latest image (timed apart: `first_refresh`)."""
    stop = threading.Event()
    viewers = [Viewer(port, stop) for _ in range(VIEWERS)]
    for viewer in viewers:
        viewer.start()
    time.sleep(seconds)
    stop.set()
    for viewer in viewers:
        viewer.join(30)
    return np.concatenate([viewer.latencies for viewer in viewers])


def first_refresh(port: int) -> float:
    """Seconds of one viewer's first refresh of a survey the page has not read yet."""
    stop = threading.Event()
    stop.set()  # one refresh, then leave
    viewer = Viewer(port, stop)
    viewer.run()
    return viewer.latencies[0] if viewer.latencies else float("nan")


def survey(directory: Path, images: int, seed: int) -> float:
    """Run a simulated survey into the catalog; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([str(CLI), "survey", "--images", str(images), "--seed", str(seed),
                    "--catalog", str(directory)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def report(label: str, latencies: np.ndarray) -> None:
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    print(f"{label}: {len(latencies)} refreshes by {VIEWERS} viewers, p50 {p50 * 1e3:.1f} ms, "
          f"p95 {p95 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {latencies.max() * 1e3:.1f} ms "
          f"-> goal 200 ms / p95 = {GOAL_S / p95:.1f}x")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "catalog"
        port = free_port()
        page = subprocess.Popen([str(CLI), "watch", "--catalog", str(directory), "--port",
                                 str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            took = survey(directory, SHORT, seed=0)
            print(f"survey of {SHORT} images written in {took:.0f} s; the page's first refresh "
                  f"of it {first_refresh(port) * 1e3:.0f} ms")
            report(f"after {SHORT} images", view(port, VIEW_S))
            short_mb = resident_mb(page.pid)
            stop = threading.Event()
            live = [Viewer(port, stop) for _ in range(VIEWERS)]
            for viewer in live:
                viewer.start()
            took = survey(directory, LONG, seed=1)
            stop.set()
            for viewer in live:
                viewer.join(30)
            print(f"survey of {LONG} images written in {took:.0f} s while {VIEWERS} viewers "
                  "watched")
            report("while it was written", np.concatenate([v.latencies for v in live]))
            print(f"the page's first refresh after it ended: {first_refresh(port) * 1e3:.0f} ms")
            report(f"after {LONG} images", view(port, VIEW_S))
            long_mb = resident_mb(page.pid)
            print(f"page resident memory: {short_mb:.0f} MB after {SHORT} images, "
                  f"{long_mb:.0f} MB after {LONG} -> {long_mb / short_mb:.3f}x")
        finally:
            page.terminate()
            page.wait(timeout=20)


if __name__ == "__main__":
    main()
