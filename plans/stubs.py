"""Plan stubs of one survey cycle: scan and judge, act once, record. None opens a run.

The per-image path yields `Msg` objects directly rather than through `bluesky.plan_stubs`:
each call of a ``@plan``-decorated stub formats the whole Python stack (to warn about plans
never iterated), which cost more than the rest of the RunEngine's work per image.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from collections.abc import Callable

import bluesky.plan_stubs as bps
import numpy as np
from bluesky.utils import FailedStatus, Msg, MsgGenerator
from ophyd import Signal
from ophyd.status import Status

from deepspm_bluesky.judging import Classifier, Judgement, judge
from deepspm_bluesky.policy import NEW_AREA_ACTION, EpisodeEnd

from ..devices import STM


class DecisionSignals:
    """Soft signals that carry the plan's own decisions into the run as event data.

    Together they are one readable object (bluesky's ``Readable`` protocol), so a whole
    set of decisions is read with one message; the data keys are the signal names.
    """

    def __init__(self, name: str, **initial: object) -> None:
        self.name = name
        self.parent = None
        self.signals = {key: Signal(name=key, value=value) for key, value in initial.items()}

    def read(self) -> dict:
        return {key: reading for signal in self.signals.values()
                for key, reading in signal.read().items()}

    def describe(self) -> dict:
        return {key: info for signal in self.signals.values()
                for key, info in signal.describe().items()}

    def read_configuration(self) -> dict:
        return {}

    def describe_configuration(self) -> dict:
        return {}

    def record(self, **values: object) -> MsgGenerator:
        """Put `values` into the signals, then read all of them into the open event."""
        for key, value in values.items():
            self.signals[key].put(value)
        return (yield from bps.read(self))


def primary_signals() -> DecisionSignals:
    return DecisionSignals("image_decisions", check="", verdict="", p_good=math.nan,
                           familiar=True, free_nm=math.nan)


def action_signals(n_actions: int) -> DecisionSignals:
    """What each action event records: the action, where, why, how it went, and the
    suggestion behind it (allowed set, Q-values, episode, who chose)."""
    return DecisionSignals("action_decisions", action="", action_index=-1, x_nm=math.nan,
                           y_nm=math.nan, reason="", outcome="", episode=-1, chooser="",
                           allowed=np.zeros(n_actions, bool),
                           q_values=np.full(n_actions, math.nan))


def episode_signals() -> DecisionSignals:
    return DecisionSignals("episode_decisions", episode=-1, episode_actions=0, outcome="",
                           chooser="")


def record_episode(decisions: DecisionSignals, step: EpisodeEnd) -> MsgGenerator[None]:
    """One `episodes` event: a conditioning episode ended, after so many actions."""
    yield from bps.create("episodes")
    yield from decisions.record(episode=step.episode, episode_actions=step.actions,
                                outcome=step.outcome, chooser=step.chooser)
    yield from bps.save()


def outage_signals() -> DecisionSignals:
    return DecisionSignals("outage_decisions", outage_start=math.nan, outage_end=math.nan,
                           outage_s=math.nan, cause="")


def record_outages(stm: STM, decisions: DecisionSignals) -> MsgGenerator[int]:
    """One `outages` event per connection outage the STM reports since the last call.

    Returns
    -------
    int
        The number of outages recorded.
    """
    outages = stm.take_outages()
    for outage in outages:
        yield Msg("create", None, name="outages")
        for key, value in {"outage_start": outage.start, "outage_end": outage.end,
                           "outage_s": outage.end - outage.start,
                           "cause": outage.cause}.items():
            decisions.signals[key].put(value)
        yield Msg("read", decisions)
        yield Msg("save")
    return len(outages)


def judge_on(stm: STM, classifier: Classifier) -> Callable[[np.ndarray], Judgement]:
    """`judge` with the STM's frame size, z range and action table."""
    def judge_image(image: np.ndarray) -> Judgement:
        return judge(image, classifier, z_range_m=stm.zctrl.z_range_nm.get() * 1e-9,
                     size_nm=stm.scanner.size_nm.get(), actions=stm.actions)

    return judge_image


class FrameCentre:
    """The scan frame's centre (x, y) in nm as one movable: ``set((x, y))`` puts both axes,
    each checked against its limits, and returns a finished status.

    ``Msg("set", axis, x)`` on an ophyd signal starts a thread per call to wait for a
    readback that a soft signal has at once: two threads an image, more than the scan of a
    simulated one. Keep one per scanner (the RunEngine remembers every object it moved).
    """

    def __init__(self, scanner) -> None:
        self.scanner = scanner
        self.name = f"{scanner.name}_centre"
        self.parent = None

    def set(self, value: tuple[float, float]) -> Status:
        x_nm, y_nm = value
        self.scanner.x_nm.put(x_nm)
        self.scanner.y_nm.put(y_nm)
        status = Status()
        status.set_finished()
        return status


def move_scanner(centre: FrameCentre, x_nm: float, y_nm: float) -> MsgGenerator[None]:
    """Move the frame centre to (x, y) nm and wait (replayed after a pause, like `bps.mv`)."""
    yield Msg("set", centre, (x_nm, y_nm), group="move")
    yield Msg("wait", None, group="move")


def scan_image(stm: STM, decisions: DecisionSignals,
               judge_image: Callable[[np.ndarray], Judgement]
               ) -> MsgGenerator[tuple[np.ndarray, Judgement]]:
    """Scan, judge and record one image with its verdict as one `primary` event.

    Returns
    -------
    (image, judgement)
    """
    yield Msg("trigger", stm, group="scan")
    yield Msg("wait", None, group="scan")
    yield Msg("create", None, name="primary")
    reading = yield Msg("read", stm)
    image = reading[stm.image.name]["value"]
    judgement = judge_image(image)
    for key, value in {"check": judgement.check, "verdict": judgement.verdict,
                       "p_good": judgement.p_good, "familiar": judgement.familiar,
                       "free_nm": math.nan if judgement.square is None
                       else judgement.square.size_nm}.items():
        decisions.signals[key].put(value)
    yield Msg("read", decisions)
    yield Msg("save")
    return image, judgement


def wait_status(status: Status) -> MsgGenerator[None]:
    """Wait for `status` itself; replayed after a pause, it waits again and never re-sets.

    Raises
    ------
    FailedStatus
        If the status finished unsuccessfully.
    """
    done: concurrent.futures.Future = concurrent.futures.Future()
    status.add_callback(lambda st: done.done() or done.set_result(None))
    yield from bps.wait_for([lambda: asyncio.wrap_future(done)])
    if not status.success:
        raise FailedStatus(status) from status.exception()


def act_once(obj, value: object) -> MsgGenerator[Status]:
    """Set `obj` to `value` so that no pause, resume or rewind can send it twice.

    The `set` is issued while the RunEngine keeps no messages for rewinding, and only the
    wait for its status is replayable (bluesky replays the messages since the last
    checkpoint after a pause: a pulse or dip must not be among them).

    Returns
    -------
    Status
        The finished status of the set.
    """
    was_rewindable = yield Msg("rewindable", None, None)
    yield Msg("rewindable", None, False)
    status = yield from bps.abs_set(obj, value)
    yield Msg("rewindable", None, was_rewindable)
    yield from wait_status(status)
    return status


def _outcome(component) -> str:
    """'done', or what the component reports ("unknown" when a reply was lost)."""
    outcome = getattr(component, "outcome", None)
    return str(outcome.get()) if outcome is not None else "done"


def condition_tip(stm: STM, action_name: str, decisions: DecisionSignals, *, reason: str,
                  x_nm: float | None = None, y_nm: float | None = None,
                  **suggestion: object) -> MsgGenerator[str]:
    """Run one conditioning action at (x, y) nm (default: the scanner's centre), record it.

    Returns
    -------
    str
        The outcome the instrument reported ("done" or "unknown").
    """
    x_nm = stm.scanner.x_nm.get() if x_nm is None else x_nm
    y_nm = stm.scanner.y_nm.get() if y_nm is None else y_nm
    yield from act_once(stm.conditioner, (action_name, x_nm, y_nm))
    outcome = _outcome(stm.conditioner)
    yield from record_action(decisions, action_name, stm.actions.index(action_name),
                             x_nm=x_nm, y_nm=y_nm, reason=reason, outcome=outcome,
                             **suggestion)
    return outcome


def record_action(decisions: DecisionSignals, name: str, index: int, *, x_nm: float,
                  y_nm: float, reason: str, outcome: str = "done", episode: int = -1,
                  allowed: np.ndarray | None = None, q_values: np.ndarray | None = None,
                  chooser: str = "") -> MsgGenerator[None]:
    """One `actions` event: what was done (or refused), where, why, and how it went."""
    n_actions = len(decisions.signals["allowed"].get())
    yield from bps.create("actions")
    yield from decisions.record(
        action=name, action_index=index, x_nm=x_nm, y_nm=y_nm, reason=reason,
        outcome=outcome, episode=episode, chooser=chooser,
        allowed=np.zeros(n_actions, bool) if allowed is None else np.asarray(allowed, bool),
        q_values=np.full(n_actions, math.nan) if q_values is None else q_values)
    yield from bps.save()


def recover(stm: STM, command: str, decisions: DecisionSignals, *,
            reason: str) -> MsgGenerator[str]:
    """Heavy tip clean (``"clean"``) or approach, once; recorded with action index -1."""
    yield from act_once(stm.zctrl, command)
    outcome = _outcome(stm.zctrl)
    yield from record_action(decisions, command, -1, x_nm=stm.scanner.x_nm.get(),
                             y_nm=stm.scanner.y_nm.get(), reason=reason, outcome=outcome)
    return outcome


def change_area(stm: STM, decisions: DecisionSignals, *, reason: str) -> MsgGenerator[str]:
    """Coarse move to a fresh approach area, once; recorded as the action "new area"."""
    yield from act_once(stm.coarse, "y+")
    outcome = _outcome(stm.coarse)
    yield from record_action(decisions, NEW_AREA_ACTION, -1, x_nm=0.0, y_nm=0.0, reason=reason,
                             outcome=outcome)
    return outcome
