"""The few calls an STM controller must offer; everything hardware-specific sits behind them.

All quantities are SI (metres, volts, amperes, seconds). Implementations: the simulator
(`deepspm_bluesky.sim.SimulatedMicroscope`) and the network backends. Optional extras
(`ScanSpeedControl`) are separate protocols, so adding one never breaks a backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from deepspm_bluesky.actions import Action

if TYPE_CHECKING:
    from .transport import Link, Outage

DEFAULT_SCAN_SPEED_M_S = 80e-9  # DeepSPM's tip speed along a line (Krull et al., Methods)
SCAN_TIMEOUT_FACTOR = 2.0  # a scan may take this many times its expected duration ...
SCAN_TIMEOUT_MARGIN_S = 120.0  # ... plus this (settling, drift waits, the server's own work)


@runtime_checkable
class Backend(Protocol):
    """What the `STM` device needs from an instrument.

    Network backends never repeat an act (`condition`, `tip_clean`, `approach`,
    `move_area`): when its reply is lost after sending, they raise
    `deepspm_bluesky.devices.OutcomeUnknown`, which the device reports as an ``outcome`` of
    ``"unknown"``. They may also offer ``take_outages()`` (the connection outages since the
    last call) and the optional protocols below.
    """

    def scan(self, x_m: float, y_m: float, size_m: float, pixels: int) -> np.ndarray:
        """Scan a square frame; return a (pixels, pixels) array of heights in metres."""

    def condition(self, action: Action, x_m: float, y_m: float) -> None:
        """Run a conditioning action (pulse, dip or stall) with the tip at (x, y)."""

    def tip_clean(self, x_m: float, y_m: float) -> bool:
        """Heavy cleaning after a crash; True when the controller reports success."""

    def approach(self) -> None:
        """Bring the tip back into tunnelling contact."""

    def withdraw(self) -> None:
        """Retract the tip out of contact."""

    def move_area(self) -> int:
        """Coarse move to a fresh approach area; return the crashes reported on the way."""

    def scan_range_m(self) -> float:
        """Side of the square the fine piezo reaches in one approach area."""

    def z_range_m(self) -> float:
        """Full range of the z piezo."""

    def set_bias(self, bias_v: float) -> None:
        """Set the imaging bias."""

    def set_setpoint(self, current_a: float) -> None:
        """Set the tunnelling-current setpoint of the z controller."""


@runtime_checkable
class ScanSpeedControl(Protocol):
    """Optional: a backend that can set the tip speed along a scan line.

    Not part of `Backend`, so that controllers without it (the DeepSPM LabVIEW server) stay
    backends; the `STM` device forwards `scanner.speed_nm_s` only to backends that have it.
    Where the backend also has a numeric `scan_speed_m_s` (attribute or property), the
    device starts from that speed instead of pushing its default.
    """

    def set_scan_speed(self, speed_m_s: float) -> None:
        """Set the tip speed along a scan line in m/s."""


@runtime_checkable
class ScanTimeouts(Protocol):
    """Optional: a backend whose scan timeout follows the frame and the tip speed.

    The `STM` device tells it the speed of ``scanner.speed_nm_s`` at the start and at every
    change, so that a 512-px frame at 20 nm/s is waited for as long as it takes.
    """

    def use_scan_speed(self, speed_m_s: float) -> None:
        """The tip speed along a line (m/s) the instrument scans at."""


def scan_duration_s(size_m: float, lines: int, speed_m_s: float) -> float:
    """Expected time of a frame: each of `lines` lines of side `size_m`, forward and back.

    Examples
    --------
    >>> scan_duration_s(10e-9, 64, 80e-9)   # DeepSPM's frame
    16.0
    """
    if not speed_m_s > 0:
        raise ValueError(f"scan speed must be positive, got {speed_m_s} m/s")
    return 2 * lines * size_m / speed_m_s


def scan_timeout_s(size_m: float, lines: int, speed_m_s: float, *,
                   margin_s: float = SCAN_TIMEOUT_MARGIN_S) -> float:
    """How long to wait for a frame: `SCAN_TIMEOUT_FACTOR` x its duration + `margin_s`.

    Examples
    --------
    >>> scan_timeout_s(100e-9, 512, 20e-9)   # 512 lines of 100 nm at 20 nm/s: 5120 s
    10360.0
    """
    return SCAN_TIMEOUT_FACTOR * scan_duration_s(size_m, lines, speed_m_s) + margin_s


@runtime_checkable
class Described(Protocol):
    """Optional: a backend that describes the instrument for a run's start document."""

    def instrument_metadata(self) -> dict:
        """Backend name, address and what the instrument reported (JSON-compatible)."""


class LinkedBackend:
    """What the network backends share: a `transport.Link` (``self.link``) and scan timeouts
    that follow the tip speed (``timeouts_s``, ``scan_margin_s``, ``scan_speed_hint_m_s``)."""

    link: Link
    timeouts_s: dict[str, float]
    scan_margin_s: float
    scan_speed_hint_m_s: float = DEFAULT_SCAN_SPEED_M_S

    def close(self) -> None:
        self.link.close()

    def take_outages(self) -> list[Outage]:
        """The outages that ended since the last call."""
        return self.link.take_outages()

    def use_scan_speed(self, speed_m_s: float) -> None:
        """The tip speed the instrument scans at (m/s): scan timeouts follow it."""
        if not speed_m_s > 0:
            raise ValueError(f"scan speed must be positive, got {speed_m_s} m/s")
        self.scan_speed_hint_m_s = float(speed_m_s)

    def scan_timeout_s(self, size_m: float, pixels: int) -> float:
        """How long a scan of this frame is waited for."""
        if "scan" in self.timeouts_s:
            return self.timeouts_s["scan"]
        return scan_timeout_s(size_m, pixels, self.scan_speed_hint_m_s,
                              margin_s=self.scan_margin_s)
