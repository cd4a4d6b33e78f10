"""The Ophyd `STM` device: one class for every instrument, the backend does the talking.

Units at the device are those of a person at the instrument (nm, V, A); the backend gets SI.
Every safety limit is checked when a value is set, before any backend call: a request out of
range raises a `ValueError` naming the signal, the value and the limits, and nothing moves.

The components that act (``conditioner``, ``zctrl``, ``coarse``) never repeat an act: when a
network backend reports that an act's reply was lost (`OutcomeUnknown`), their Status still
finishes, and their ``outcome`` signal says ``"unknown"`` instead of ``"done"``, so that the
plan can rescan to judge the tip.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, Signal
from ophyd.status import Status

from deepspm_bluesky.actions import Action, ActionTable, load_actions
from deepspm_bluesky.imaging import check_contact

from .backend import Backend, Described, ScanSpeedControl, ScanTimeouts
from .transport import Outage, OutcomeUnknown

log = logging.getLogger(__name__)

NM = 1e-9
DIRECTIONS = ("x+", "x-", "y+", "y-")
DONE, UNKNOWN = "done", "unknown"  # values of the `outcome` signals


def _outcome_of(act: Callable[[], object]) -> str:
    """Run `act`; ``"done"``, or ``"unknown"`` when its reply was lost after sending."""
    try:
        act()
    except OutcomeUnknown as exc:
        log.warning("%s", exc)
        return UNKNOWN
    return DONE


class LimitedSignal(Signal):
    """A soft signal that refuses values outside [low, high] before anything moves.

    If `backend_call` names a backend method, a put is forwarded to the instrument, times
    `to_si` (e.g. 1e-9 for a value in nm); `integer` refuses fractional values. A put of the
    value the signal already holds changes nothing and is not forwarded (so a plan that
    restores a setting it never changed works on a server that cannot set it).
    """

    def __init__(self, *args, low: float, high: float, backend_call: str = "",
                 to_si: float = 1.0, integer: bool = False, **kwargs):
        self._low, self._high, self._backend_call = low, high, backend_call
        self._to_si, self._integer = to_si, integer
        super().__init__(*args, **kwargs)

    @property
    def limits(self) -> tuple[float, float]:
        return (self._low, self._high)

    def set_limits(self, low: float, high: float) -> None:
        self._low, self._high = low, high

    def check_value(self, value) -> None:
        """Raise a ValueError naming the signal if `value` is not allowed."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not math.isfinite(value):
            raise ValueError(f"{self.name}: {value!r} is not a finite number")
        if self._integer and value != int(value):
            raise ValueError(f"{self.name}: {value!r} is not a whole number")
        if not self._low <= value <= self._high:
            raise ValueError(
                f"{self.name}: {value} is outside the safety limits [{self._low}, {self._high}]"
            )

    def set(self, value, **kwargs) -> Status:
        """Check synchronously (so the caller gets the error), then set as a soft signal."""
        self.check_value(value)
        return super().set(value, **kwargs)

    def put(self, value, **kwargs) -> None:
        self.check_value(value)
        if value != self.get():
            self._forward(value)
        super().put(value, **kwargs)

    def _forward(self, value) -> None:
        if self._backend_call:
            getattr(self.root.backend, self._backend_call)(float(value) * self._to_si)


class FrameSignal(LimitedSignal):
    """A scan-frame coordinate (x, y centre or side, nm) whose frame must fit the piezo range."""

    def check_value(self, value) -> None:
        super().check_value(value)
        try:
            self.parent.check_frame(**{self.attr_name: float(value)})
        except ValueError as err:
            raise ValueError(f"{self.name}: {err}") from None


class ImageSignal(Signal):
    """The last scanned image: float32 heights in metres, shape (pixels, pixels)."""

    def describe(self) -> dict:
        pixels = int(self.parent.scanner.pixels.get())
        desc = super().describe()
        desc[self.name].update(
            dtype="array", dtype_numpy=np.dtype(np.float32).str, shape=[pixels, pixels],
            units="m",
        )
        return desc


class Scanner(Device):
    """The scan frame: centre (x, y) and side in nm within the approach area, pixels per line,
    and the tip speed along a line."""

    x_nm = Cpt(FrameSignal, value=0.0, low=-425.0, high=425.0, kind="hinted")
    y_nm = Cpt(FrameSignal, value=0.0, low=-425.0, high=425.0, kind="hinted")
    size_nm = Cpt(FrameSignal, value=10.0, low=0.1, high=850.0, kind="config")
    pixels = Cpt(LimitedSignal, value=64, low=8, high=1024, integer=True, kind="config")
    speed_nm_s = Cpt(LimitedSignal, value=80.0, low=0.1, high=10_000.0, to_si=NM,
                     kind="config")

    @property
    def half_range_nm(self) -> float:
        """Half the side of the square the fine piezo reaches."""
        return self.x_nm.limits[1]

    def check_frame(self, *, x_nm: float | None = None, y_nm: float | None = None,
                    size_nm: float | None = None) -> None:
        """Raise a ValueError if the frame, with the given changes, leaves the piezo range."""
        x = float(self.x_nm.get()) if x_nm is None else x_nm
        y = float(self.y_nm.get()) if y_nm is None else y_nm
        size = float(self.size_nm.get()) if size_nm is None else size_nm
        half = self.half_range_nm
        if max(abs(x), abs(y)) + size / 2 > half * (1 + 1e-12):
            raise ValueError(
                f"scan frame centred at ({x}, {y}) nm with side {size} nm leaves the piezo "
                f"range of +-{half} nm"
            )

    def frame_m(self) -> tuple[float, float, float, int]:
        """(x, y, size) in metres and pixels, checked to lie inside the piezo range."""
        self.check_frame()
        x, y, size = (float(s.get()) for s in (self.x_nm, self.y_nm, self.size_nm))
        return x * NM, y * NM, size * NM, int(self.pixels.get())


class ZController(Device):
    """Tip height control: approach, withdraw, heavy cleaning; z range in nm.

    `in_contact` follows the commands and every image: a scan whose mean sits at the
    retracted end of the z range (DeepSPM's test) clears it. `outcome` is ``"done"`` after a
    command, ``"unknown"`` when its reply was lost (contact is then left as it was: the next
    image tells).
    """

    z_range_nm = Cpt(Signal, value=0.0, kind="config")
    in_contact = Cpt(Signal, value=True, kind="normal")
    outcome = Cpt(Signal, value=DONE, kind="omitted")

    COMMANDS = ("approach", "withdraw", "clean")

    def set(self, command: str) -> DeviceStatus:
        """Run `approach`, `withdraw` or `clean` (tip clean at the scanner's centre)."""
        if command not in self.COMMANDS:
            raise ValueError(f"unknown z-controller command {command!r}; known: {self.COMMANDS}")
        stm = self.root
        x, y, _, _ = stm.scanner.frame_m()  # checked now, before anything moves

        def act() -> None:
            if command == "approach":
                stm.backend.approach()
            elif command == "withdraw":
                stm.backend.withdraw()
            else:
                _require(stm.backend.tip_clean(x, y), "tip clean failed")
            self.in_contact.put(command != "withdraw")

        return stm.submit(lambda: self.outcome.put(_outcome_of(act)))

    def update_contact(self, image: np.ndarray) -> None:
        """Set `in_contact` from an image: False where it sits at the retracted z limit
        (`deepspm_bluesky.imaging.check_contact`, the survey's own check)."""
        lost = check_contact(image, z_range_m=float(self.z_range_nm.get()) * NM).fired
        self.in_contact.put(not lost)


class CoarsePositioner(Device):
    """Coarse motor: moves to a fresh approach area; `area` counts the moves.

    `outcome` is ``"done"`` after a move, ``"unknown"`` when its reply was lost (`area` and
    `crashes` are then left as they were).
    """

    area = Cpt(Signal, value=0, kind="hinted")
    crashes = Cpt(Signal, value=0, kind="normal")
    outcome = Cpt(Signal, value=DONE, kind="omitted")

    def set(self, direction: str = "y+") -> DeviceStatus:
        """Move to the next approach area in `direction` (one of `DIRECTIONS`)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown coarse direction {direction!r}; known: {DIRECTIONS}")
        stm = self.root

        def move() -> None:
            self.crashes.put(int(stm.backend.move_area()))
            self.area.put(int(self.area.get()) + 1)

        return stm.submit(lambda: self.outcome.put(_outcome_of(move)))


class TipConditioner(Device):
    """Runs a named action of the action table, at the scanner's centre or at (x, y) nm.

    ``set("dip -1.2 nm")`` acts at the scanner's centre; ``set(("dip -1.2 nm", x_nm, y_nm))``
    at a given place in the approach area. Unknown actions, actions beyond the bias or dip
    limits and places outside the piezo range raise before anything moves. `outcome` is
    ``"done"`` after the action, ``"unknown"`` when its reply was lost (it is not sent again).
    """

    last_action = Cpt(Signal, value="", kind="normal")
    outcome = Cpt(Signal, value=DONE, kind="omitted")
    max_bias_v = Cpt(Signal, value=10.0, kind="config")
    max_dip_nm = Cpt(Signal, value=6.0, kind="config")

    def set(self, request: str | tuple[str, float, float]) -> DeviceStatus:
        stm = self.root
        name, x_nm, y_nm = _action_request(request, stm.scanner)
        action = stm.actions.get(name)
        self.check_action(action)
        half = stm.scanner.half_range_nm
        if not (math.isfinite(x_nm) and math.isfinite(y_nm)) or max(abs(x_nm), abs(y_nm)) > half:
            raise ValueError(f"action {name!r} at ({x_nm}, {y_nm}) nm is outside the piezo "
                             f"range of +-{half} nm")

        def run() -> None:
            stm.backend.condition(action, x_nm * NM, y_nm * NM)

        def act_and_note() -> None:
            outcome = _outcome_of(run)
            self.last_action.put(action.name)  # sent, whether or not its reply came
            self.outcome.put(outcome)

        return stm.submit(act_and_note)

    def check_action(self, action: Action) -> None:
        """Raise a ValueError if `action` exceeds the bias or dip-depth safety limit.

        A limit that is not a number (NaN) refuses every action: it never switches safety off.
        """
        if not abs(action.bias_v) <= self.max_bias_v.get():
            raise ValueError(
                f"action {action.name!r}: bias {action.bias_v} V exceeds the safety limit "
                f"of {self.max_bias_v.get()} V"
            )
        if not abs(action.dip_nm) <= self.max_dip_nm.get():
            raise ValueError(
                f"action {action.name!r}: dip {action.dip_nm} nm exceeds the safety limit "
                f"of {self.max_dip_nm.get()} nm"
            )


def _action_request(request, scanner: Scanner) -> tuple[str, float, float]:
    """(name, x_nm, y_nm) from a name or a (name, x_nm, y_nm) tuple."""
    if isinstance(request, str):
        return request, float(scanner.x_nm.get()), float(scanner.y_nm.get())
    try:
        name, x_nm, y_nm = request
        return str(name), float(x_nm), float(y_nm)
    except (TypeError, ValueError):
        raise ValueError(f"conditioner request {request!r} is neither an action name nor "
                         "(name, x_nm, y_nm)") from None


class STM(Device):
    """A scanning tunnelling microscope; the backend decides which one.

    Parameters
    ----------
    backend
        Object with the `deepspm_bluesky.devices.Backend` calls (simulator or network).
    actions
        Conditioning action table, or a TOML/CSV file to load one from; default: DeepSPM's.

    Notes
    -----
    Components: `image` (hinted by shape in `describe`), `scanner` (x, y, size, pixels,
    speed), `bias` (V), `current` setpoint (A), `zctrl` (approach/withdraw/clean, z range,
    in-contact flag), `coarse` (approach area), `conditioner` (actions). Frame centre, area
    and contact are read with every event; sizes, bias, setpoint and limits are configuration.

    Examples
    --------
    >>> from deepspm_bluesky.devices import simulated_stm
    >>> stm = simulated_stm(seed=1)
    >>> stm.trigger().wait(); stm.image.get().shape
    (64, 64)
    """

    image = Cpt(ImageSignal, value=np.zeros((64, 64), np.float32), kind="normal")
    scanner = Cpt(Scanner)
    bias = Cpt(LimitedSignal, value=1.0, low=-10.0, high=10.0, backend_call="set_bias",
               kind="config")
    current = Cpt(LimitedSignal, value=25e-12, low=1e-13, high=1e-8,
                  backend_call="set_setpoint", kind="config")
    zctrl = Cpt(ZController)
    coarse = Cpt(CoarsePositioner)
    conditioner = Cpt(TipConditioner)

    def __init__(self, prefix: str = "", *, backend: Backend,
                 actions: ActionTable | str | Path | None = None, **kwargs) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"{type(backend).__name__} does not implement the STM Backend calls")
        self.backend = backend
        self.actions = actions if isinstance(actions, ActionTable) else load_actions(actions)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stm-backend")
        super().__init__(prefix, **kwargs)
        half_range_nm = backend.scan_range_m() / 2 / NM
        for axis in (self.scanner.x_nm, self.scanner.y_nm):
            axis.set_limits(-half_range_nm, half_range_nm)
        self.scanner.size_nm.set_limits(0.1, 2 * half_range_nm)
        self.zctrl.z_range_nm.put(backend.z_range_m() / NM)
        speed = self.scanner.speed_nm_s
        if isinstance(backend, ScanSpeedControl):
            current = getattr(backend, "scan_speed_m_s", None)
            if isinstance(current, (int, float)):  # start from the instrument's own speed
                speed.put(round(current / NM, 9))
            speed._backend_call = "set_scan_speed"
        if isinstance(backend, ScanTimeouts):  # scan timeouts follow the speed
            speed.subscribe(lambda value, **_: backend.use_scan_speed(float(value) * NM),
                            run=True)

    def submit(self, work: Callable[[], object]) -> DeviceStatus:
        """Run `work` on the backend thread; the status finishes (or fails) with it."""
        status = BackendStatus(self)

        def run() -> None:
            try:
                work()
            except Exception as exc:  # reported through the status, which the RE raises
                status.set_exception(exc)
            else:
                status.set_finished()

        self._executor.submit(run)
        return status

    def trigger(self) -> DeviceStatus:
        """Scan the current frame; the status finishes when the image is in `image`."""
        frame = self.scanner.frame_m()

        def scan() -> None:
            image = checked_image(self.backend.scan(*frame), frame[3])
            self.image.put(image)
            self.zctrl.update_contact(image)

        return self.submit(scan)

    def take_outages(self) -> list[Outage]:
        """The connection outages that ended since the last call (none for the simulator).

        Each `Outage` has ``start`` and ``end`` (epoch seconds) and ``cause``; once taken,
        an outage is not returned again.
        """
        take = getattr(self.backend, "take_outages", None)
        return list(take()) if callable(take) else []

    def instrument_metadata(self) -> dict:
        """What a run's start document should say about the instrument.

        The backend (``sim``, ``labview``, ``nanonis``), its address, what the instrument
        reported (ranges, protocol extensions) and the ranges the device works with.
        """
        info = {"backend": type(self.backend).__name__}
        if isinstance(self.backend, Described):
            info.update(self.backend.instrument_metadata())
        else:
            from deepspm_bluesky.sim import SimulatedMicroscope

            if isinstance(self.backend, SimulatedMicroscope):
                info = {"backend": "sim", "seed": int(self.backend.seed)}
        info.update(scan_range_nm=_decimal(2 * self.scanner.half_range_nm),
                    z_range_nm=_decimal(float(self.zctrl.z_range_nm.get())))
        return info

    def destroy(self) -> None:
        """Stop the backend thread and close the instrument connection, if the backend has one."""
        self._executor.shutdown(wait=False)
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()
        super().destroy()


class BackendStatus(DeviceStatus):
    """A DeviceStatus whose repr names the backend's error, so a failed run's reason says why."""

    def __str__(self) -> str:
        text = super().__str__()
        if self.done and not self.success:
            text = f"{text[:-1]}, error={self.exception()!r})"
        return text

    __repr__ = __str__


def checked_image(image: np.ndarray, pixels: int) -> np.ndarray:
    """The image as float32, or a ValueError naming what is wrong with it."""
    image = np.asarray(image)
    if image.shape != (pixels, pixels):
        raise ValueError(f"scan returned shape {image.shape}, expected ({pixels}, {pixels})")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"scan returned {np.count_nonzero(~np.isfinite(image))} non-finite pixels")
    return image.astype(np.float32, copy=False)


def _decimal(value: float) -> float:
    """A value converted between units, without its binary noise (999.9999999999999 -> 1000)."""
    return float(f"{value:.12g}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(message)


def simulated_stm(name: str = "stm", seed: int = 0, *,
                  actions: ActionTable | str | Path | None = None, **options) -> STM:
    """An `STM` driving a `SimulatedMicroscope(seed=seed, **options)`.

    Parameters
    ----------
    name
        Device name; the image reads as ``f"{name}_image"``.
    seed
        Seed of the simulator.
    actions
        Action table or a TOML/CSV file with one; default: DeepSPM's.
    **options
        `SimulatedMicroscope` options: ``tip_state``, ``realtime``, ``scan_speed_m_s``,
        ``sleep``, ``clock``, ``settle_s``.
    """
    from deepspm_bluesky.sim import SimulatedMicroscope

    return STM(backend=SimulatedMicroscope(seed=seed, **options), name=name, actions=actions)
