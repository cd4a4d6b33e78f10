"""Survey notifications: rules fire once per event, by real SMTP and HTTP to local servers."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import event_model
import pytest
from bluesky import RunEngine
from notify_servers import SmtpReceiver, WebhookReceiver, free_port
from typer.testing import CliRunner

from deepspm_bluesky.callbacks import RulesError, SurveyNotifier, load_rules
from deepspm_bluesky.callbacks.notify_rules import parse_rules
from deepspm_bluesky.cli import app
from deepspm_bluesky.devices import simulated_stm
from deepspm_bluesky.plans import autonomous_survey

PAGE_URL = "http://127.0.0.1:8000"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def smtp():
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def hook():
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(autouse=True)
def empty_inboxes(smtp, hook):
    smtp.clear()
    hook.clear()


def rules_for(smtp, hook, **rules):
    return parse_rules({
        "page_url": PAGE_URL, "rules": rules,
        "email": {"host": "127.0.0.1", "port": smtp.port, "from": "stm@lab.example",
                  "to": ["you@lab.example"]},
        "webhook": {"url": hook.url}})


def never_good(image):
    """A judge that never sees a good tip: every image of the survey is bad."""
    return 0.05


@pytest.fixture(scope="module")
def bad_tip_survey(smtp, hook):
    """A real simulated survey whose tip is never judged good, watched by a notifier."""
    notifier = SurveyNotifier(rules_for(smtp, hook, no_good_image_minutes=0.002,
                                        survey_ended=True))
    engine = RunEngine({}, call_returns_result=True)
    engine.subscribe(notifier)
    stm = simulated_stm(seed=3, realtime=0.005)  # ~2 s, well past the 0.12 s dry spell
    result = engine(autonomous_survey(stm, max_images=15, classifier=never_good,
                                      md={"sample": "MgPc on Ag(100)"}))
    notifier.close()
    stm.destroy()
    return notifier, result.run_start_uids[0], smtp.wait_for(2), hook.wait_for(2)


def test_a_survey_without_a_good_image_sends_one_dry_spell_notice_and_one_ending(
        bad_tip_survey):
    notifier, uid, _, _ = bad_tip_survey
    assert [notice.rule for notice in notifier.notices] == ["no_good_image", "survey_ended"]
    assert all(notice.run_uid == uid for notice in notifier.notices)
    assert notifier.notices[1].what == "survey ended: took the 15 images asked for"


def test_each_notice_goes_by_email_naming_run_sample_and_page(bad_tip_survey):
    _, uid, mails, _ = bad_tip_survey
    assert len(mails) == 2
    for mail in mails:
        assert mail["to"] == ["you@lab.example"]
        assert mail["subject"].endswith(f"(run {uid[:8]}, sample MgPc on Ag(100))")
        assert f"run {uid} (sample MgPc on Ag(100))" in mail["body"]
        assert f"watch it: {PAGE_URL}/#run={uid}" in mail["body"]
    assert mails[0]["subject"].startswith("[deepspm] no good image for")


def test_each_notice_goes_by_webhook_as_json(bad_tip_survey):
    _, uid, _, posts = bad_tip_survey
    assert [post["json"]["rule"] for post in posts] == ["no_good_image", "survey_ended"]
    for post in posts:
        assert post["type"] == "application/json"
        assert post["json"]["run_uid"] == uid
        assert post["json"]["page_url"] == PAGE_URL
        assert post["json"]["run_url"] == f"{PAGE_URL}/#run={uid}"
        assert uid in post["json"]["text"]


class CraftedRun:
    """Documents of a survey run made with event-model, at the times a test chooses."""

    def __init__(self, notifier, t0: float = 1_000_000.0) -> None:
        self.notifier = notifier
        self.bundle = event_model.compose_run(metadata={"sample": "Au(111)"}, time=t0)
        notifier("start", self.bundle.start_doc)
        self.streams = {}
        for name, keys in {"primary": ("verdict",), "actions": ("action", "reason"),
                           "outages": ("outage_s", "cause")}.items():
            data_keys = {key: {"source": "sim", "dtype": "string", "shape": []}
                         for key in keys}
            self.streams[name] = self.bundle.compose_descriptor(name=name, data_keys=data_keys,
                                                                time=t0)
            notifier("descriptor", self.streams[name].descriptor_doc)

    def event(self, stream: str, at: float, **data) -> None:
        doc = self.streams[stream].compose_event(data=data, timestamps=dict.fromkeys(data, at),
                                                 time=at)
        self.notifier("event", doc)

    def stop(self, exit_status: str = "success", reason: str = "") -> dict:
        doc = self.bundle.compose_stop(exit_status=exit_status, reason=reason)
        self.notifier("stop", doc)
        return doc


class Kept(list):
    """A sender that only keeps the notices (for a rule that must stay silent)."""

    def submit(self, notice) -> None:
        self.append(notice)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_dry_spell_fires_without_documents_once_and_rearms_on_a_good_image(smtp, hook):
    clock = Clock(1_000_000.0)
    notifier = SurveyNotifier(rules_for(smtp, hook, no_good_image_minutes=10), clock=clock,
                              poll_s=0.01)
    run = CraftedRun(notifier, t0=clock.now)
    clock.now += 601  # no document since the start: the timer thread alone must notice
    assert len(hook.wait_for(1)) == 1
    clock.now += 3600
    notifier.check_clock()
    run.event("primary", clock.now, verdict="bad")
    assert [n.rule for n in notifier.notices] == ["no_good_image"]  # still the same spell
    run.event("primary", clock.now, verdict="good")
    clock.now += 601
    notifier.check_clock()
    notifier.close()
    assert [n.what for n in notifier.notices] == ["no good image for 10 min",
                                                  "no good image for 10 min"]
    assert len(smtp.wait_for(2)) == 2


def test_crashes_area_changes_outages_and_the_end_each_fire_once(smtp, hook):
    notifier = SurveyNotifier(rules_for(smtp, hook, crashes_per_hour=3, survey_ended=True,
                                        approach_area_changed=True, outage=True))
    run = CraftedRun(notifier, t0=0.0)
    for minute in (10, 20, 30, 40, 50):  # the third fires; the 4th and 5th need a 6th
        run.event("primary", 60.0 * minute, verdict="crash")
    run.event("actions", 3100.0, action="new area", reason="approach area used up")
    run.event("actions", 3200.0, action="dip -1.8 nm", reason="bad tip")
    run.event("outages", 3300.0, outage_s=95.0, cause="connection refused")
    stop = run.stop("fail", "2 crashes in a row | images 5")
    notifier("stop", stop)  # the same stop again is the same event
    notifier.close()
    assert [(n.rule, n.what) for n in notifier.notices] == [
        ("crashes_per_hour", "3 crashes within the last 20 min"),
        ("approach_area_changed", "moved to a new approach area (approach area used up)"),
        ("outage", "instrument unreachable for 95 s (connection refused)"),
        ("survey_ended", "survey FAILED: 2 crashes in a row"),
    ]
    assert len(smtp.wait_for(4)) == 4
    assert [post["json"]["sample"] for post in hook.wait_for(4)] == ["Au(111)"] * 4


def test_crashes_spread_over_more_than_an_hour_do_not_fire(smtp, hook):
    notifier = SurveyNotifier(rules_for(smtp, hook, crashes_per_hour=3), sender=Kept())
    run = CraftedRun(notifier, t0=0.0)
    for minute in (0, 40, 80, 120):
        run.event("primary", 60.0 * minute, verdict="crash")
    assert notifier.notices == []


def test_a_hanging_or_absent_server_never_blocks_or_breaks_the_survey(smtp, hook, caplog):
    rules = parse_rules({"rules": {"survey_ended": True}, "webhook": {"url": hook.url},
                         "email": {"host": "127.0.0.1", "port": free_port(),
                                   "from": "stm@lab.example", "to": "you@lab.example"}})
    notifier = SurveyNotifier(rules)
    run = CraftedRun(notifier)
    hook.gate.clear()  # the webhook receiver now hangs on every request
    try:
        run.stop()  # returns while the sender thread is stuck in the POST
        assert hook.items == []
        assert [n.rule for n in notifier.notices] == ["survey_ended"]
    finally:
        hook.gate.set()
    with caplog.at_level(logging.WARNING, logger="deepspm_bluesky.callbacks"):
        notifier.close()
    assert len(hook.wait_for(1)) == 1
    assert [route for route, *_ in notifier.sender.failed] == ["e-mail"]
    assert "by e-mail failed: ConnectionRefusedError" in caplog.text


@pytest.mark.parametrize("text, field", [
    ("rules = {outage = true}", "email, webhook"),
    ('[rules]\ncrashes_per_hour = "three"\n[webhook]\nurl = "http://x"', "rules.crashes_per_hour"),
    ('[rules]\nno_good_image = 30\n[webhook]\nurl = "http://x"', "rules.no_good_image"),
    ('[rules]\noutage = true\n[webhook]\nurl = "ftp://x"', "webhook.url"),
    ('[rules]\noutage = true\n[email]\nhost = "h"\nfrom = "a@b"', "email.to"),
    ('[rules]\noutage = true\n[email]\nhost = "h"\nfrom = "a@b"\nto = "a@b"\nport = 70000',
     "email.port"),
    ("[rules\n", "not valid TOML"),
])
def test_a_bad_rules_file_is_refused_naming_file_and_field(tmp_path, text, field):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesError, match=re.escape(f"{path}: {field}")):
        load_rules(path)


def test_the_readme_rules_example_loads():
    text = README.read_text().split("## Live plots and notifications", 1)[1]
    example = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    rules = parse_rules(__import__("tomllib").loads(example), source="README")
    assert rules.no_good_image_minutes and rules.survey_ended and rules.crashes_per_hour
    assert rules.email is not None and rules.webhook is not None


def test_the_cli_refuses_a_bad_rules_file_before_opening_a_run(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[rules]\nsurvey_ended = "yes"\n[webhook]\nurl = "http://127.0.0.1:9"')
    catalog = tmp_path / "catalog"
    result = CliRunner().invoke(app, ["survey", "--notify", str(rules), "--catalog",
                                      str(catalog)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {rules}: rules.survey_ended: must be true or false, got 'yes'"]
    assert not catalog.exists()


def test_the_survey_command_plots_and_notifies(tmp_path, smtp, hook):
    rules = tmp_path / "rules.toml"
    rules.write_text(f'page_url = "{PAGE_URL}"\n[rules]\nsurvey_ended = true\n'
                     f'[webhook]\nurl = "{hook.url}"\n[email]\nhost = "127.0.0.1"\n'
                     f'port = {smtp.port}\nfrom = "stm@lab.example"\nto = "you@lab.example"\n')
    png = tmp_path / "survey.png"
    cli = Path(sys.executable).with_name("deepspm-bluesky")
    done = subprocess.run([cli, "survey", "--images", "6", "--plot", png, "--notify", rules,
                           "--catalog", tmp_path / "catalog"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    uid = re.search(r"^run (\S+)", done.stdout, re.M).group(1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [post["json"]["run_uid"] for post in hook.wait_for(1)] == [uid]
    assert "survey ended: took the 6 images asked for" in smtp.wait_for(1)[0]["subject"]
