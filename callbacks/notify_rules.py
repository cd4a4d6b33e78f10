"""The notification rules file (TOML): what to tell whom, read and checked before a survey.

Example (every field shown; leave out a rule to switch it off)::

    page_url = "http://127.0.0.1:8000"   # the watch page, linked from every message

    [rules]
    no_good_image_minutes = 30    # no good image for this long (once per dry spell)
    survey_ended = true           # the run ended: success, stopped, failed or aborted
    approach_area_changed = true  # the survey moved to a new approach area
    crashes_per_hour = 3          # this many crashes within 60 minutes
    outage = true                 # the instrument's connection was lost and came back

    [email]
    host = "smtp.example.org"
    port = 587
    from = "stm@example.org"
    to = ["you@example.org"]
    starttls = true
    username = "stm"
    password_env = "DEEPSPM_SMTP_PASSWORD"   # the password, from this environment variable

    [webhook]
    url = "https://chat.example.org/hooks/XYZ"   # JSON POST, {"text": ...} and details
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PAGE_URL = "http://127.0.0.1:8000"
SEND_TIMEOUT_S = 10.0


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class EmailSettings:
    """Where and how to send e-mail (SMTP)."""

    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 25
    starttls: bool = False
    username: str = ""
    password_env: str = ""
    timeout_s: float = SEND_TIMEOUT_S


@dataclass(frozen=True)
class WebhookSettings:
    """Where to POST a JSON message."""

    url: str
    timeout_s: float = SEND_TIMEOUT_S


@dataclass(frozen=True)
class NotificationRules:
    """Which rules are on, and where their messages go.

    A rule that is off is None (minutes, counts) or False (the others).
    """

    page_url: str = DEFAULT_PAGE_URL
    no_good_image_minutes: float | None = None
    survey_ended: bool = False
    approach_area_changed: bool = False
    crashes_per_hour: int | None = None
    outage: bool = False
    email: EmailSettings | None = None
    webhook: WebhookSettings | None = None
    source: str = field(default="", compare=False)


_RULES = {"no_good_image_minutes", "survey_ended", "approach_area_changed",
          "crashes_per_hour", "outage"}
_EMAIL = {"host", "port", "from", "to", "starttls", "username", "password_env", "timeout_s"}
_WEBHOOK = {"url", "timeout_s"}
_TOP = {"page_url", "rules", "email", "webhook"}


def load_rules(path: str | os.PathLike) -> NotificationRules:
    """Read and check a rules file.

    Raises
    ------
    RulesError
        On a missing or unreadable file, invalid TOML, an unknown or mistyped field, or
        no way to send (neither ``[email]`` nor ``[webhook]``); the message names the file
        and the field.
    """
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text())
    except OSError as error:
        raise RulesError(f"{path}: cannot read the rules file ({error.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RulesError(f"{path}: not valid TOML ({error})") from None
    return parse_rules(table, source=str(path))


def parse_rules(table: dict, *, source: str = "rules") -> NotificationRules:
    """`NotificationRules` from a parsed TOML table (see `load_rules`)."""
    check = _Checker(source)
    check.known("", table, _TOP)
    rules = table.get("rules")
    if not isinstance(rules, dict) or not rules:
        raise RulesError(f"{source}: rules: a [rules] table with at least one rule is needed")
    check.known("rules.", rules, _RULES)
    email = _email(check, table["email"]) if "email" in table else None
    webhook = _webhook(check, table["webhook"]) if "webhook" in table else None
    if email is None and webhook is None:
        raise RulesError(f"{source}: email, webhook: neither [email] nor [webhook] is given, "
                         "so no message could be sent")
    minutes = rules.get("no_good_image_minutes")
    crashes = rules.get("crashes_per_hour")
    return NotificationRules(
        page_url=check.url("page_url", table.get("page_url", DEFAULT_PAGE_URL)),
        no_good_image_minutes=None if minutes is None
        else check.positive("rules.no_good_image_minutes", minutes),
        survey_ended=check.flag("rules.survey_ended", rules.get("survey_ended", False)),
        approach_area_changed=check.flag("rules.approach_area_changed",
                                         rules.get("approach_area_changed", False)),
        crashes_per_hour=None if crashes is None
        else check.count("rules.crashes_per_hour", crashes),
        outage=check.flag("rules.outage", rules.get("outage", False)),
        email=email, webhook=webhook, source=source)


def _email(check: _Checker, table: object) -> EmailSettings:
    table = check.table("email", table)
    check.known("email.", table, _EMAIL)
    for key in ("host", "from", "to"):
        if key not in table:
            raise RulesError(f"{check.source}: email.{key}: missing (needed to send e-mail)")
    to = table["to"]
    recipients = (to,) if isinstance(to, str) else to
    if not (isinstance(recipients, (list, tuple)) and recipients
            and all(isinstance(r, str) and "@" in r for r in recipients)):
        raise RulesError(f"{check.source}: email.to: must be an address or a list of "
                         f"addresses, got {to!r}")
    port = check.count("email.port", table.get("port", 25))
    if port > 65535:
        raise RulesError(f"{check.source}: email.port: must be a port number, got {port}")
    return EmailSettings(
        host=check.text("email.host", table["host"]), sender=check.text("email.from",
                                                                         table["from"]),
        to=tuple(recipients), port=port,
        starttls=check.flag("email.starttls", table.get("starttls", False)),
        username=check.text("email.username", table.get("username", ""), empty=True),
        password_env=check.text("email.password_env", table.get("password_env", ""),
                                empty=True),
        timeout_s=check.positive("email.timeout_s", table.get("timeout_s", SEND_TIMEOUT_S)))


def _webhook(check: _Checker, table: object) -> WebhookSettings:
    table = check.table("webhook", table)
    check.known("webhook.", table, _WEBHOOK)
    if "url" not in table:
        raise RulesError(f"{check.source}: webhook.url: missing (where to POST)")
    return WebhookSettings(
        url=check.url("webhook.url", table["url"]),
        timeout_s=check.positive("webhook.timeout_s", table.get("timeout_s", SEND_TIMEOUT_S)))


@dataclass(frozen=True)
class _Checker:
    """Type checks whose errors name the file and the field."""

    source: str

    def fail(self, name: str, expected: str, value: object) -> RulesError:
        return RulesError(f"{self.source}: {name}: must be {expected}, got {value!r}")

    def known(self, prefix: str, table: dict, names: set[str]) -> None:
        unknown = sorted(set(table) - names)
        if unknown:
            raise RulesError(f"{self.source}: {prefix}{unknown[0]}: unknown field (known: "
                             f"{', '.join(sorted(names))})")

    def table(self, name: str, value: object) -> dict:
        if not isinstance(value, dict):
            raise self.fail(name, "a table", value)
        return value

    def flag(self, name: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.fail(name, "true or false", value)
        return value

    def count(self, name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(name, "a whole number >= 1", value)
        return value

    def positive(self, name: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise self.fail(name, "a number > 0", value)
        return float(value)

    def text(self, name: str, value: object, *, empty: bool = False) -> str:
        if not isinstance(value, str) or not (empty or value.strip()):
            raise self.fail(name, "a string" if empty else "a non-empty string", value)
        return value

    def url(self, name: str, value: object) -> str:
        if not (isinstance(value, str) and value.startswith(("http://", "https://"))):
            raise self.fail(name, "an http:// or https:// URL", value)
        return value
