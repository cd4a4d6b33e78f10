"""The watch page under 20 viewers: per-refresh latency against the 200 ms goal, and the page's
resident memory after a 1 000-image and a 10 000-image survey (it must not grow with length).

Real processes on loopback: `deepspm-bluesky watch` over a catalog folder, `deepspm-bluesky
survey` (simulator, shipped classifier) writing into it, and 20 viewer threads here, each
refreshing once a second as the page does when a survey changed: ``/api/status``, then
``/api/survey`` and the latest image's PNG. Printed: latency percentiles and goal / p95 after
the short survey, while the long one is written and after it; failed refreshes; how long
the page took to show each survey ended; the page's resident memory after each and their
ratio. `DEEPSPM_WATCH_IMAGES` sets the long survey's length (10 000: about 5 minutes in all
on 2 shared cores).
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


def get(connection: http.client.HTTPConnection, path: str) -> bytes:
    """The body of ``GET path``; RuntimeError unless it answered 200."""
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return body


class Viewer(threading.Thread):
    """One browser's worth of refreshes, once a second, timed whole; a refresh that fails
    (an error status, a timeout) is counted and the next one opens a new connection."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def refresh(self, connection: http.client.HTTPConnection) -> None:
        """What the page does when the survey changed: status, snapshot, latest image."""
        status = json.loads(get(connection, "/api/status"))
        get(connection, "/api/survey")
        if status["images"]:
            get(connection, f"/api/runs/{status['uid']}/images/{status['images'] - 1}.png")

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        time.sleep(random.uniform(0, 1) if not self.stop.is_set() else 0)  # not in lockstep
        while True:
            started = time.perf_counter()
            try:
                self.refresh(connection)
                self.latencies.append(time.perf_counter() - started)
            except (OSError, RuntimeError, http.client.HTTPException) as error:
                self.failures.append(f"{type(error).__name__}: {error}")
                connection.close()
            if self.stop.wait(max(0.0, 1.0 - (time.perf_counter() - started))):
                return


class Viewers:
    """`VIEWERS` viewers refreshing while the ``with`` block runs."""

    def __init__(self, port: int) -> None:
        self.stop = threading.Event()
        self.viewers = [Viewer(port, self.stop) for _ in range(VIEWERS)]

    def __enter__(self) -> Viewers:
        for viewer in self.viewers:
            viewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for viewer in self.viewers:
            viewer.join(30)

    def report(self, label: str) -> None:
        """Latency percentiles of every refresh, against the goal, and the failed ones."""
        latencies = np.concatenate([viewer.latencies for viewer in self.viewers])
        failures = [failure for viewer in self.viewers for failure in viewer.failures]
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        print(f"{label}: {len(latencies)} refreshes by {VIEWERS} viewers, p50 {p50 * 1e3:.1f} "
              f"ms, p95 {p95 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max "
              f"{latencies.max() * 1e3:.1f} ms -> goal 200 ms / p95 = {GOAL_S / p95:.2f}x; "
              f"{len(failures)} failed" + (f" (first: {failures[0]})" if failures else ""))


class MemoryWatch:
    """The page's resident memory against the image count it shows, sampled every second
    while the ``with`` block runs: growing with the survey, or levelling off."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port = pid, port
        self.samples: list[tuple[str, int, float]] = []  # (run uid, images, MB)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)

    def _sample(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.wait(1.0):
            status = json.loads(get(connection, "/api/status"))
            self.samples.append((status["uid"], status["images"], resident_mb(self.pid)))

    def report(self) -> None:
        """Memory at each quarter of the newest survey's length."""
        newest = self.samples[-1][0]
        images, mb = np.array([sample[1:] for sample in self.samples if sample[0] == newest]).T
        quarters = [f"{int(images[i])} images {mb[i]:.0f} MB" for i in
                    (np.searchsorted(images, images.max() * q / 4) for q in (1, 2, 3, 4))]
        print(f"page resident memory while it was written: {', '.join(quarters)}")


def caught_up(port: int, images: int) -> float:
    """Seconds until the page shows an ended survey of `images` images (polled every 50 ms)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while True:
        status = json.loads(get(connection, "/api/status"))
        if status["images"] == images and not status["running"]:
            return time.perf_counter() - started
        time.sleep(0.05)


def survey(directory: Path, images: int, seed: int) -> float:
    """Run a simulated survey into the catalog; its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run([str(CLI), "survey", "--images", str(images), "--seed", str(seed),
                           "--catalog", str(directory)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    if done.returncode:
        raise RuntimeError(f"the survey of {images} images exited {done.returncode}: "
                           f"{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "catalog"
        port = free_port()
        page = subprocess.Popen([str(CLI), "watch", "--catalog", str(directory), "--port",
                                 str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            took = survey(directory, SHORT, seed=0)
            print(f"survey of {SHORT} images written in {took:.0f} s, no one watching; the page "
                  f"showed it ended {caught_up(port, SHORT):.2f} s after a first look")
            with Viewers(port) as viewers:
                time.sleep(VIEW_S)
            viewers.report(f"after {SHORT} images")
            short_mb = resident_mb(page.pid)
            with Viewers(port) as viewers, MemoryWatch(page.pid, port) as memory:
                took = survey(directory, LONG, seed=1)
                behind = caught_up(port, LONG)
            print(f"survey of {LONG} images written in {took:.0f} s while {VIEWERS} viewers "
                  f"watched; the page showed it ended {behind:.2f} s after")
            viewers.report("while it was written")
            memory.report()
            with Viewers(port) as viewers:
                time.sleep(VIEW_S)
            viewers.report(f"after {LONG} images")
            long_mb = resident_mb(page.pid)
            print(f"page resident memory: {short_mb:.0f} MB after {SHORT} images, "
                  f"{long_mb:.0f} MB after {LONG} -> {long_mb / short_mb:.3f}x")
        finally:
            page.terminate()
            page.wait(timeout=20)


if __name__ == "__main__":
    main()
