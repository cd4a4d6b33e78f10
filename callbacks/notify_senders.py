"""Sending notices by e-mail (SMTP) and webhook (JSON POST) from a thread of their own.

The survey only puts a `Notice` on a queue; a sender thread delivers it, and a server that
is slow, down or refusing is logged, never raised into the survey.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import smtplib
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

from .notify_rules import EmailSettings, NotificationRules, WebhookSettings

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "[deepspm]"


@dataclass(frozen=True)
class Notice:
    """One thing that happened to one run, ready to be sent.

    `rule` is the rule that fired (e.g. ``"no_good_image"``), `what` a one-line account,
    `details` extra JSON-able facts for the webhook's payload.
    """

    rule: str
    run_uid: str
    what: str
    page_url: str
    sample: str = ""
    time: float = field(default_factory=time.time)
    details: dict = field(default_factory=dict)

    def run_name(self) -> str:
        return f"run {self.run_uid}" + (f" (sample {self.sample})" if self.sample else "")

    def run_url(self) -> str:
        """The watch page opened at this run's images (the page reads ``#run=UID``)."""
        return f"{self.page_url.rstrip('/')}/#run={self.run_uid}"

    def subject(self) -> str:
        sample = f", sample {self.sample}" if self.sample else ""
        return f"{SUBJECT_PREFIX} {self.what} (run {self.run_uid[:8]}{sample})"

    def text(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.time))
        return (f"{self.what}\n\n{self.run_name()}\nat {when}\n"
                f"watch it: {self.run_url()}\n\n(rule: {self.rule})\n")

    def payload(self) -> dict:
        """The webhook's JSON: ``text`` (what chat tools show) and the facts one by one."""
        return {"text": f"{self.what}: {self.run_name()}, watch it: {self.run_url()}",
                "rule": self.rule, "what": self.what, "run_uid": self.run_uid,
                "sample": self.sample, "time": self.time, "page_url": self.page_url,
                "run_url": self.run_url(), **self.details}


def send_email(settings: EmailSettings, notice: Notice) -> None:
    """Send `notice` as a plain-text e-mail; raises on any SMTP or network error."""
    message = EmailMessage()
    message["Subject"] = notice.subject()
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.to)
    message.set_content(notice.text())
    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s) as smtp:
        if settings.starttls:
            smtp.starttls()
        if settings.username:
            smtp.login(settings.username, os.environ.get(settings.password_env, ""))
        smtp.send_message(message)


def post_webhook(settings: WebhookSettings, notice: Notice) -> None:
    """POST `notice.payload()` as JSON; raises on a network error or an HTTP error status."""
    request = urllib.request.Request(
        settings.url, data=json.dumps(notice.payload()).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "deepspm-bluesky"})
    with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
        response.read()


class NoticeSender:
    """A queue of notices and the thread that sends each by every configured route.

    Parameters
    ----------
    rules
        Where to send (its ``email`` and ``webhook`` settings).
    """

    def __init__(self, rules: NotificationRules) -> None:
        self.routes: list[tuple[str, Callable[[Notice], None]]] = []
        if rules.email is not None:
            self.routes.append(("e-mail", lambda n: send_email(rules.email, n)))
        if rules.webhook is not None:
            self.routes.append(("webhook", lambda n: post_webhook(rules.webhook, n)))
        self.sent: list[tuple[str, Notice]] = []
        self.failed: list[tuple[str, Notice, str]] = []
        self._queue: queue.Queue[Notice | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="notice-sender", daemon=True)
        self._thread.start()

    def submit(self, notice: Notice) -> None:
        """Queue `notice`; returns at once."""
        self._queue.put_nowait(notice)

    def close(self, timeout_s: float | None = None) -> bool:
        """Send what is queued, then stop; False if `timeout_s` passed first."""
        self._queue.put_nowait(None)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (notice := self._queue.get()) is not None:
            for route, send in self.routes:
                try:
                    send(notice)
                except Exception as error:  # down, refusing, slow: log, keep the survey going
                    logger.warning("notification %r by %s failed: %s: %s", notice.what, route,
                                   type(error).__name__, error)
                    self.failed.append((route, notice, f"{type(error).__name__}: {error}"))
                else:
                    logger.info("notification %r sent by %s", notice.what, route)
                    self.sent.append((route, notice))
