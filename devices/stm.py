"""The Ophyd `STM` device: one class for every instrument, the backend does the talking."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, Signal

from deepspm_bluesky.actions import ActionTable, load_actions

from .backend import Backend

NM = 1e-9
DIRECTIONS = ("x+", "x-", "y+", "y-")


class LimitedSignal(Signal):
    """A soft signal that refuses values outside [low, high] before anything moves.

    If `backend_call` names a backend method, a put is forwarded to the instrument.
    """

    def __init__(self, *args, low: float, high: float, backend_call: str = "", **kwargs):
        self._low, self._high, self._backend_call = low, high, backend_call
        super().__init__(*args, **kwargs)

    @property
    def limits(self) -> tuple[float, float]:
        return (self._low, self._high)

    def set_limits(self, low: float, high: float) -> None:
        self._low, self._high = low, high

    def check_value(self, value) -> None:
        if not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
            raise ValueError(f"{self.name}: {value!r} is not a finite number")
        if not self._low <= value <= self._high:
            raise ValueError(
                f"{self.name}: {value} is outside the safety limits [{self._low}, {self._high}]"
            )

    def put(self, value, **kwargs) -> None:
        self.check_value(value)
        if self._backend_call:
            getattr(self.root.backend, self._backend_call)(float(value))
        super().put(value, **kwargs)


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
    """The scan frame: centre (x, y) and side in nm within the approach area, pixels per line."""

    x_nm = Cpt(LimitedSignal, value=0.0, low=-425.0, high=425.0, kind="hinted")
    y_nm = Cpt(LimitedSignal, value=0.0, low=-425.0, high=425.0, kind="hinted")
    size_nm = Cpt(LimitedSignal, value=10.0, low=0.1, high=850.0, kind="config")
    pixels = Cpt(LimitedSignal, value=64, low=8, high=1024, kind="config")
    speed_nm_s = Cpt(LimitedSignal, value=80.0, low=0.1, high=10_000.0, kind="config")

    def frame_m(self) -> tuple[float, float, float, int]:
        """(x, y, size) in metres and pixels, checked to lie inside the piezo range."""
        x, y, size = (float(s.get()) for s in (self.x_nm, self.y_nm, self.size_nm))
        half_range = self.x_nm.limits[1]
        if max(abs(x), abs(y)) + size / 2 > half_range:
            raise ValueError(
                f"scan frame centred at ({x}, {y}) nm with side {size} nm leaves the piezo "
                f"range of +-{half_range} nm"
            )
        return x * NM, y * NM, size * NM, int(self.pixels.get())


class ZController(Device):
    """Tip height control: approach, withdraw, heavy cleaning; z range in nm."""

    z_range_nm = Cpt(Signal, value=0.0, kind="config")
    in_contact = Cpt(Signal, value=True, kind="normal")

    COMMANDS = ("approach", "withdraw", "clean")

    def set(self, command: str) -> DeviceStatus:
        """Run `approach`, `withdraw` or `clean` (tip clean at the scanner's centre)."""
        if command not in self.COMMANDS:
            raise ValueError(f"unknown z-controller command {command!r}; known: {self.COMMANDS}")
        stm = self.root
        if command == "approach":
            return stm.submit(lambda: (stm.backend.approach(), self.in_contact.put(True)))
        if command == "withdraw":
            return stm.submit(lambda: (stm.backend.withdraw(), self.in_contact.put(False)))
        x, y, _, _ = stm.scanner.frame_m()
        return stm.submit(lambda: _require(stm.backend.tip_clean(x, y), "tip clean failed"))


class CoarsePositioner(Device):
    """Coarse motor: moves to a fresh approach area; `area` counts the moves."""

    area = Cpt(Signal, value=0, kind="hinted")
    crashes = Cpt(Signal, value=0, kind="normal")

    def set(self, direction: str = "y+") -> DeviceStatus:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown coarse direction {direction!r}; known: {DIRECTIONS}")
        stm = self.root

        def move() -> None:
            self.crashes.put(int(stm.backend.move_area()))
            self.area.put(int(self.area.get()) + 1)

        return stm.submit(move)


class TipConditioner(Device):
    """Runs a named action of the action table at the scanner's centre."""

    last_action = Cpt(Signal, value="", kind="hinted")
    max_bias_v = Cpt(Signal, value=10.0, kind="config")
    max_dip_nm = Cpt(Signal, value=6.0, kind="config")

    def set(self, action_name: str) -> DeviceStatus:
        stm = self.root
        action = stm.actions.get(action_name)
        if abs(action.bias_v) > self.max_bias_v.get():
            raise ValueError(
                f"action {action.name!r}: bias {action.bias_v} V exceeds the safety limit "
                f"of {self.max_bias_v.get()} V"
            )
        if abs(action.dip_nm) > self.max_dip_nm.get():
            raise ValueError(
                f"action {action.name!r}: dip {action.dip_nm} nm exceeds the safety limit "
                f"of {self.max_dip_nm.get()} nm"
            )
        x, y, _, _ = stm.scanner.frame_m()

        def run() -> None:
            stm.backend.condition(action, x, y)
            self.last_action.put(action.name)

        return stm.submit(run)


class STM(Device):
    """A scanning tunnelling microscope; the backend decides which one.

    Parameters
    ----------
    backend
        Object with the `deepspm_bluesky.devices.Backend` calls (simulator or network).
    actions
        Conditioning action table; default: DeepSPM's.

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

    def __init__(self, prefix: str = "", *, backend: Backend, actions: ActionTable | None = None,
                 **kwargs) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"{type(backend).__name__} does not implement the STM Backend calls")
        self.backend = backend
        self.actions = actions if actions is not None else load_actions()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stm-backend")
        super().__init__(prefix, **kwargs)
        half_range_nm = backend.scan_range_m() / 2 / NM
        for axis in (self.scanner.x_nm, self.scanner.y_nm):
            axis.set_limits(-half_range_nm, half_range_nm)
        self.scanner.size_nm.set_limits(0.1, 2 * half_range_nm)
        self.zctrl.z_range_nm.put(backend.z_range_m() / NM)

    def submit(self, work: Callable[[], object]) -> DeviceStatus:
        """Run `work` on the backend thread; the status finishes (or fails) with it."""
        status = DeviceStatus(self)

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
            self.image.put(checked_image(self.backend.scan(*frame), frame[3]))

        return self.submit(scan)

    def destroy(self) -> None:
        self._executor.shutdown(wait=False)
        super().destroy()


def checked_image(image: np.ndarray, pixels: int) -> np.ndarray:
    """The image as float32, or a ValueError naming what is wrong with it."""
    image = np.asarray(image)
    if image.shape != (pixels, pixels):
        raise ValueError(f"scan returned shape {image.shape}, expected ({pixels}, {pixels})")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"scan returned {np.count_nonzero(~np.isfinite(image))} non-finite pixels")
    return image.astype(np.float32, copy=False)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(message)


def simulated_stm(name: str = "stm", seed: int = 0, **options) -> STM:
    """An `STM` driving a `SimulatedMicroscope(seed=seed, **options)`."""
    from deepspm_bluesky.sim import SimulatedMicroscope

    return STM(backend=SimulatedMicroscope(seed=seed, **options), name=name)
