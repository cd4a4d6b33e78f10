"""Notifications of a survey: rules (`notify_rules`) watched over its documents and the clock.

>>> notifier = SurveyNotifier(load_rules("rules.toml"))      # doctest: +SKIP
>>> RE.subscribe(notifier); RE(autonomous_survey()); notifier.close()   # doctest: +SKIP

Each rule fires once per event, where "the same event" is:

- ``no_good_image_minutes``: a dry spell, from the run's start or its last good image; one
  notice per spell, re-armed by the next good image. Checked by a timer thread as well,
  so it fires while no document arrives (a stuck instrument, a long outage).
- ``survey_ended``: the run's stop document (success, stop, failure or abort): once a run.
- ``approach_area_changed``: one ``new area`` event of the ``actions`` stream.
- ``crashes_per_hour``: K crash images within 60 minutes; a notice takes those crashes
  with it, so the next one needs K further crashes within an hour.
- ``outage``: one event of the ``outages`` stream (recorded when the connection is back).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bluesky.callbacks.core import CallbackBase, make_class_safe

from .notify_rules import NotificationRules
from .notify_senders import Notice, NoticeSender
from .survey_view import duration_text

logger = logging.getLogger(__name__)

CRASH_WINDOW_S = 3600.0
MAX_POLL_S = 30.0
CLOSE_TIMEOUT_S = 30.0


@dataclass
class _Run:
    uid: str
    sample: str
    dry_since: float  # the run's start or its last good image
    dry_notified: bool = False
    streams: dict[str, str] = field(default_factory=dict)  # descriptor uid -> name
    crashes: deque[float] = field(default_factory=deque)


@make_class_safe(logger=logger)
class SurveyNotifier(CallbackBase):
    """Watch a survey's documents and send a notice when a rule of `rules` fires.

    Parameters
    ----------
    rules
        The rules and where to send (`deepspm_bluesky.callbacks.load_rules`).
    sender
        Anything with ``submit(notice)``; default: a `NoticeSender` for `rules`.
    clock
        Wall-clock time in seconds (documents carry `time.time`); injectable for tests.
    poll_s
        How often the timer thread checks for a dry spell (default: a tenth of it, at
        most 30 s).

    Attributes
    ----------
    notices
        Every notice fired, in order.
    """

    def __init__(self, rules: NotificationRules, *, sender=None,
                 clock: Callable[[], float] = time.time, poll_s: float | None = None) -> None:
        super().__init__()
        self.rules = rules
        self.sender = NoticeSender(rules) if sender is None else sender
        self.clock = clock
        self.notices: list[Notice] = []
        self._run: _Run | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._timer = None
        if rules.no_good_image_minutes is not None:
            spell_s = 60 * rules.no_good_image_minutes
            self.poll_s = min(spell_s / 10, MAX_POLL_S) if poll_s is None else poll_s
            self._timer = threading.Thread(target=self._watch_clock, name="notifier-clock",
                                           daemon=True)
            self._timer.start()

    # -- documents -------------------------------------------------------------------------
    def start(self, doc):
        with self._lock:
            self._run = _Run(doc["uid"], str(doc.get("sample", "")), doc.get("time", 0.0))

    def descriptor(self, doc):
        with self._lock:
            if self._run is not None:
                self._run.streams[doc["uid"]] = doc.get("name", "")

    def event(self, doc):
        with self._lock:
            run = self._run
            stream = None if run is None else run.streams.get(doc["descriptor"])
            if stream == "primary":
                self._image(run, doc)
            elif stream == "actions" and doc["data"].get("action") == "new area":
                self._area_changed(doc)
            elif stream == "outages":
                self._outage(doc)

    def stop(self, doc):
        with self._lock:
            if self._run is None:
                return
            if self.rules.survey_ended:
                self._fire("survey_ended", _ending(doc),
                           exit_status=doc.get("exit_status", ""), reason=doc.get("reason", ""),
                           num_events=doc.get("num_events", {}))
            self._run = None

    # -- rules -----------------------------------------------------------------------------
    def _image(self, run: _Run, doc: dict) -> None:
        verdict = doc["data"].get("verdict")
        if verdict == "good":
            run.dry_since, run.dry_notified = doc["time"], False
        self._check_dry_spell(doc["time"])
        if verdict == "crash" and self.rules.crashes_per_hour is not None:
            run.crashes.append(doc["time"])
            while run.crashes and run.crashes[0] <= doc["time"] - CRASH_WINDOW_S:
                run.crashes.popleft()
            if len(run.crashes) >= self.rules.crashes_per_hour:
                span = duration_text(doc["time"] - run.crashes[0])
                self._fire("crashes_per_hour", f"{len(run.crashes)} crashes within the last "
                           f"{span}", crashes=len(run.crashes))
                run.crashes.clear()

    def _area_changed(self, doc: dict) -> None:
        if self.rules.approach_area_changed:
            reason = doc["data"].get("reason", "")
            self._fire("approach_area_changed", "moved to a new approach area"
                       + (f" ({reason})" if reason else ""), reason=reason)

    def _outage(self, doc: dict) -> None:
        if self.rules.outage:
            data = doc["data"]
            seconds, cause = float(data.get("outage_s", math.nan)), data.get("cause", "")
            self._fire("outage", f"instrument unreachable for {duration_text(seconds)}"
                       + (f" ({cause})" if cause else ""), outage_s=seconds, cause=cause,
                       outage_start=data.get("outage_start"), outage_end=data.get("outage_end"))

    def check_clock(self) -> None:
        """Fire the dry-spell rule if it is due now (the timer thread calls this)."""
        with self._lock:
            self._check_dry_spell(self.clock())

    def _check_dry_spell(self, now: float) -> None:
        run, minutes = self._run, self.rules.no_good_image_minutes
        if run is None or minutes is None or run.dry_notified:
            return
        if now - run.dry_since >= 60 * minutes:
            run.dry_notified = True
            spell = duration_text(now - run.dry_since)
            self._fire("no_good_image", f"no good image for {spell}", dry_since=run.dry_since)

    def _fire(self, rule: str, what: str, **details: object) -> None:
        run = self._run
        notice = Notice(rule=rule, run_uid=run.uid, sample=run.sample, what=what,
                        page_url=self.rules.page_url, time=self.clock(), details=details)
        self.notices.append(notice)
        logger.info("notification: %s (%s)", what, notice.run_name())
        self.sender.submit(notice)

    # -- threads ---------------------------------------------------------------------------
    def _watch_clock(self) -> None:
        while not self._closed.wait(self.poll_s):
            try:
                self.check_clock()
            except Exception:  # never let the timer die silently
                logger.exception("notifier: checking the dry spell failed")

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the timer, then send what is queued (waiting at most `timeout_s`)."""
        self._closed.set()
        if self._timer is not None:
            self._timer.join()
        close = getattr(self.sender, "close", None)
        if close is not None and not close(timeout_s):
            logger.warning("notifier: notices still unsent after %.0f s", timeout_s)


def _ending(stop: dict) -> str:
    """The survey_ended notice's line: how the run ended and why (without its summary)."""
    status = stop.get("exit_status", "")
    reason = str(stop.get("reason", "")).split(" | ")[0]
    words = {"success": "survey ended", "fail": "survey FAILED", "abort": "survey aborted"}
    return words.get(status, f"survey ended ({status})") + (f": {reason}" if reason else "")
