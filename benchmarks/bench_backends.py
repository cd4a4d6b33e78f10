"""Per-scan protocol overhead of the network backends against the direct simulator.

Each backend scans a 64-px frame from a simulator served on 127.0.0.1 (LabVIEW protocol,
fake Nanonis); the overhead is its time per scan minus the direct simulator's, so it covers
request encoding, the loopback round trips, the server and the reply decoding.
Goal: at most 5 ms per 64-px scan.
"""

from __future__ import annotations

from collections.abc import Callable

from deepspm_bluesky.devices.labview import LabVIEWBackend
from deepspm_bluesky.devices.nanonis import NanonisBackend
from deepspm_bluesky.servers.labview import LabVIEWServer
from deepspm_bluesky.servers.nanonis import NanonisServer
from deepspm_bluesky.sim import SimulatedMicroscope

from .timing import per_call_s, report

PIXELS = 64
SIZE_M = 10e-9
SEED = 0
REPEAT = 30
GOAL_S = 5e-3


def scanner(backend) -> Callable[[], object]:
    """One 64-px scan per call, walking along x so that no two frames are the same."""
    position = [0.0]

    def scan() -> object:
        position[0] = (position[0] + SIZE_M) % 400e-9
        return backend.scan(position[0], 0.0, SIZE_M, PIXELS)

    return scan


def main() -> None:
    direct_s = per_call_s(scanner(SimulatedMicroscope(seed=SEED)), repeat=REPEAT)
    servers = {
        "LabVIEW protocol": (LabVIEWServer, LabVIEWBackend),
        "Nanonis TCP": (NanonisServer, NanonisBackend),
    }
    for label, (server_class, backend_class) in servers.items():
        with server_class(SimulatedMicroscope(seed=SEED)) as server:
            backend = backend_class(*server.address)
            ours_s = per_call_s(scanner(backend), repeat=REPEAT)
            backend.close()
        report(f"{label} scan, {PIXELS} px over loopback", ours_s, direct_s, "direct simulator")
        overhead_s = ours_s - direct_s
        verdict = "within" if overhead_s <= GOAL_S else "OVER"
        print(f"  protocol overhead {overhead_s * 1e3:.3f} ms per scan ({verdict} the goal of "
              f"{GOAL_S * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
