"""`autonomous_survey`: scan, judge, condition and move on, for as long as asked.

The decisions are `deepspm_bluesky.policy.SurveyPolicy`'s; this plan executes its steps,
records each as data, and keeps the state directory current, so that a pause never repeats
an action and a killed survey continues where it stopped.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from pathlib import Path
from typing import Literal

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.utils import Msg, MsgGenerator, RequestAbort, RequestStop

from deepspm_bluesky.journal import JournaledRun, journal_path, read_journal
from deepspm_bluesky.judging import Classifier, Judgement
from deepspm_bluesky.ml import Agent, ConditioningAgent, NoActionAllowed, TipClassifier
from deepspm_bluesky.ml.live import LiveLearner
from deepspm_bluesky.ml.named import agent_named, classifier_named
from deepspm_bluesky.navigation import Navigator
from deepspm_bluesky.policy import (
    MODES,
    Act,
    Condition,
    End,
    EpisodeEnd,
    Move,
    NewArea,
    Recover,
    Step,
    SurveyPolicy,
    mark_action,
    mark_image,
)
from deepspm_bluesky.state import StateDirectory

from ..devices import STM
from .conditioning import ConditioningChoices
from .metadata import plan_metadata
from .stubs import (
    FrameCentre,
    action_signals,
    change_area,
    condition_tip,
    episode_signals,
    judge_on,
    move_scanner,
    outage_signals,
    primary_signals,
    record_action,
    record_episode,
    record_outages,
    recover,
    scan_image,
)

MIN_FREE_MB = 200.0  # below this much free disk at the state directory, the survey ends
SAVE_STATE_EVERY_S = 1.0  # saving costs ~2.5 ms, as much as the rest of a simulated cycle
UNFAMILIAR_WINDOW = 20  # ~8 % of familiar images are flagged by chance (TipClassifier.familiar)
UNFAMILIAR_ADVICE = ("images were unlike the classifier's training data: P(good) is a guess there, "
                     "so the survey does not condition on them; fine-tune on this sample: "
                     "deepspm-bluesky train-classifier --init pretrained --data FOLDER")


def autonomous_survey(
    stm: STM,
    *,
    max_images: int = 100,
    mode: Literal["operational", "training"] = "operational",
    classifier: Classifier | str | None = None,
    agent: Agent | str | None = None,
    learn: bool = True,
    state_dir: str | None = None,
    navigation_file: str | None = None,
    min_free_mb: float = MIN_FREE_MB,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """Survey the sample: scan, judge every image, condition the tip when it goes bad.

    Parameters
    ----------
    stm
        The microscope (any backend).
    max_images
        Number of images to take, a whole number >= 1 (scans after a crash count too).
    mode
        ``"operational"`` conditions after 10 bad images in a row; ``"training"`` conditions
        at once and damages a good tip again with 5 random reset actions.
    classifier
        Callable returning P(good tip) for a raw image, or a name (``"pretrained"``, a
        checkpoint path: `deepspm_bluesky.ml.named`); None uses the shipped
        `deepspm_bluesky.ml.TipClassifier.pretrained()`.
    agent
        Conditioning agent (``suggest``/``observe``), or a name (``"pretrained"``,
        ``"random"``, a checkpoint path); None uses the shipped
        `deepspm_bluesky.ml.ConditioningAgent.pretrained()` (exploring in training mode).
    learn
        Training mode: the agent learns from every transition in a background thread
        (`deepspm_bluesky.ml.LiveLearner`); False keeps it as it is.
    state_dir
        Directory keeping everything needed to resume (navigation, counters, agent state,
        the journal of documents) and watched for a ``STOP`` file; a survey given the same
        directory continues where the last one stopped. The journal is written by a
        subscribed `deepspm_bluesky.callbacks.JournaledTiledWriter`, which also brings a
        killed run's journal into Tiled when the next survey starts.
    navigation_file
        Shortcut for the navigation state alone (used ground, position); ignored when
        `state_dir` is given.
    min_free_mb
        The survey ends (exit_status "fail") when the state directory's disk has less free.
    md
        Extra metadata for the start document.

    Notes
    -----
    Per image, as DeepSPM (Krull et al., Commun. Phys. 3, 54 (2020)): a crash is cleaned
    (a second one in a row ends the survey), lost contact re-approached (three in a row end
    it), debris avoided by growing forbidden discs (a new approach area after 250 in a row);
    a bad tip gets the agent's action at the centre of the largest empty square of the image.
    A checkpoint precedes every cycle and every action, and each action is sent once.
    Bad input (options, a corrupt state file) raises here, before any run opens.
    """
    survey = _Survey(stm, max_images=max_images, mode=mode, classifier=classifier,
                     agent=agent, learn=learn, state_dir=state_dir, navigation_file=navigation_file,
                     min_free_mb=min_free_mb)
    _md = plan_metadata(
        "autonomous_survey",
        {"stm": stm, "max_images": max_images, "mode": mode, "state_dir": state_dir,
         "navigation_file": navigation_file,
         **{key: value for key, value in (("classifier", classifier), ("agent", agent))
            if isinstance(value, str)}},
        md, detectors=[stm.name], num_points=max_images, instrument=stm.instrument_metadata(),
        hints={"dimensions": [([stm.scanner.x_nm.name], "primary")]},
    )
    _md["classifier"] = _judged_by(survey.classifier, classifier)
    if survey.state is not None:
        _md["journal_dir"] = str(survey.state.journal.resolve())
    return survey.run(_md)


def _judged_by(classifier: Classifier, given: Classifier | str | None) -> dict:
    """Which weights judge the run: the name they were given by (a shipped name or a
    checkpoint path; "pretrained" by default; a function's or object's own name) and, for a
    `TipClassifier`, its architecture and the hash of its weights (`fingerprint`)."""
    if isinstance(given, str) or given is None:
        name = given or "pretrained"
    else:
        name = getattr(given, "__qualname__", type(given).__name__)
    if not isinstance(classifier, TipClassifier):
        return {"name": name}
    return {"name": name, "architecture": classifier.architecture,
            "fingerprint": classifier.fingerprint()}


class _Survey:
    """One survey's pieces and the plan generators that execute the policy's steps."""

    def __init__(self, stm: STM, *, max_images: int, mode: str, classifier: Classifier | None,
                 agent: Agent | None, learn: bool, state_dir: str | None,
                 navigation_file: str | None,
                 min_free_mb: float) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not (isinstance(min_free_mb, (int, float)) and min_free_mb >= 0):
            raise ValueError(f"min_free_mb must be a number >= 0, got {min_free_mb!r}")
        if isinstance(classifier, str):
            classifier = classifier_named(classifier)
        if isinstance(agent, str):
            agent = agent_named(agent, explore=mode == "training")
        self.stm = stm
        self.state = StateDirectory(state_dir) if state_dir is not None else None
        self.min_free_mb = float(min_free_mb)
        nav = self._navigator(navigation_file)
        self.policy = SurveyPolicy(nav, stm.actions, max_images=max_images, mode=mode)
        if agent is None:
            agent = ConditioningAgent.pretrained(explore=mode == "training")
        if mode == "training":
            agent = LiveLearner(agent, learn=learn)
        self.choices = ConditioningChoices(agent)
        self._restore()
        self.classifier = classifier if classifier is not None else TipClassifier.pretrained()
        self.judge_image = judge_on(stm, self.classifier)
        self.images, self.actions = primary_signals(), action_signals(len(stm.actions))
        self.episodes, self.outages = episode_signals(), outage_signals()
        self.centre = FrameCentre(stm.scanner)
        self.started = time.monotonic()
        self.saved_at = -math.inf  # the first cycle saves at once: the state names this run

    # -- state --------------------------------------------------------------------------
    def _navigator(self, navigation_file: str | None) -> Navigator:
        area_nm = 2 * self.stm.scanner.half_range_nm
        path = self.state.navigation if self.state is not None else navigation_file
        if path is None:
            return Navigator(area_nm)
        nav = Navigator(area_nm)
        if Path(path).exists():
            nav.restore(path)
        nav.state_path = None if self.state is not None else Path(path)
        return nav

    def _restore(self) -> None:
        """Counters, random states and the agent's state from the state directory."""
        if self.state is None:
            return
        progress = self.state.load_progress()
        if progress is not None:
            self.policy.restore(progress.get("policy"), source=str(self.state.progress))
            self._replay_journal_tail(progress)
        self.choices.restore(self.state.agent)

    def _replay_journal_tail(self, progress: dict) -> None:
        """A killed run's last steps, journaled after the state was saved, into the navigation.

        The journal itself reaches Tiled through `JournaledTiledWriter` when the new run starts.
        """
        run_uid, done = progress.get("run"), progress.get("recorded") or {}
        path = journal_path(self.state.journal, run_uid) if run_uid else None
        if path is None or not path.exists():
            return
        run = JournaledRun(read_journal(path))
        for event in run.events("primary")[done.get("primary", 0):]:
            self._mark_scanned(event["data"])
        for event in run.events("actions")[done.get("actions", 0):]:
            self._mark_acted(event["data"])

    def _mark_scanned(self, data: dict) -> None:
        mark_image(self.policy.nav, self.stm.actions, data["verdict"],
                   data[self.stm.scanner.x_nm.name], data[self.stm.scanner.y_nm.name])

    def _mark_acted(self, data: dict) -> None:
        mark_action(self.policy.nav, self.stm.actions, data["action"], data["x_nm"],
                    data["y_nm"], data["outcome"])

    def save(self, run_uid: str = "", recorded: dict[str, int] | None = None, *,
             final: bool = False) -> None:
        """Navigation and counters into the state directory at most every
        `SAVE_STATE_EVERY_S` (the journal covers the cycles since), the agent every few
        minutes, everything at the end."""
        now = time.monotonic()
        if self.state is None or (not final and now - self.saved_at < SAVE_STATE_EVERY_S):
            return
        self.saved_at = now
        self.policy.nav.save(self.state.navigation)
        self.state.save_progress({"policy": self.policy.state(), "run": run_uid,
                                  "recorded": recorded or {}})
        self.choices.save(self.state.agent, force=final)

    # -- the run ------------------------------------------------------------------------
    def run(self, md: dict) -> MsgGenerator[str]:
        uid = yield from bps.open_run(md)
        self.uid = uid
        try:
            end = yield from bpp.stage_wrapper(
                bpp.finalize_wrapper(self.loop(), self.make_safe()), [self.stm])
        except RequestStop:
            yield from self.close(End("success", "stopped by the user"))
            raise
        except RequestAbort:  # the RunEngine closes the run with its own reason
            print(f"survey abort: {self.summary_line()}")
            raise
        except Exception as error:
            yield from self.close(End("fail", f"{type(error).__name__}: {error}"))
            raise
        yield from record_outages(self.stm, self.outages)
        yield from self.close(end)
        return uid

    def close(self, end: End) -> MsgGenerator[None]:
        line = self.summary_line()
        reason = f"{end.reason} | {line}" if end.reason else line
        print(f"survey {end.exit_status}: {reason}")
        yield from bps.close_run(exit_status=end.exit_status, reason=reason)

    def summary_line(self) -> str:
        """The survey summary (images, good-tip fraction, verdicts and actions, seconds)."""
        summary = {**self.policy.summary(), "seconds": round(time.monotonic() - self.started, 1)}
        return "; ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in summary.items())

    def make_safe(self) -> MsgGenerator[None]:
        """Imaging bias and setpoint back, state saved: on success, stop, abort or error."""
        self.choices.close()
        self.save(self.uid, self.recorded(), final=True)
        yield from bps.mv(self.stm.bias, self.bias_v, self.stm.current, self.setpoint_a)

    def recorded(self) -> dict[str, int]:
        """Events recorded so far in this run, by stream (saved with the state)."""
        return {"primary": self.policy.counters.images, **self.events}

    def loop(self) -> MsgGenerator[End]:
        self.bias_v, self.setpoint_a = self.stm.bias.get(), self.stm.current.get()
        self.events: Counter[str] = Counter()
        self.familiarity: deque[bool] = deque(maxlen=UNFAMILIAR_WINDOW)
        self.warned_unfamiliar = False
        while True:
            yield Msg("checkpoint")  # bps.checkpoint without the @plan stack capture
            self.save(self.uid, self.recorded())
            self.events["outages"] += yield from record_outages(self.stm, self.outages)
            self._check_stop_conditions()
            for step in self.policy.next_frame():
                end = yield from self.execute(step)
                if end is not None:
                    return end
            image, judgement = yield from scan_image(self.stm, self.images, self.judge_image)
            if self.policy.mode == "training":
                self.choices.learn(image, judgement)
            self._watch_familiarity(judgement)
            for step in self.policy.judged(judgement):
                end = yield from self.execute(step, image)
                if end is not None:
                    return end

    def _watch_familiarity(self, judgement: Judgement) -> None:
        """Warn once when most recent images are unfamiliar (single flags are chance)."""
        if judgement.check != "ok":
            return
        self.familiarity.append(judgement.familiar)
        unfamiliar = self.familiarity.count(False)
        if not self.warned_unfamiliar and unfamiliar >= UNFAMILIAR_WINDOW // 2:
            print(f"warning: {unfamiliar} of the last {len(self.familiarity)} {UNFAMILIAR_ADVICE}")
            self.warned_unfamiliar = True

    def _check_stop_conditions(self) -> None:
        """The STOP file ends the survey cleanly; a nearly full disk ends it as failed."""
        if self.state is None:
            return
        if self.state.stop_requested():  # honoured once: the same command then continues
            self.state.stop_file.unlink(missing_ok=True)
            self.policy.request_end("success", f"stopped by the STOP file in {self.state.path}")
        elif (free := self.state.free_mb()) < self.min_free_mb:
            self.policy.request_end("fail", f"disk nearly full: {free:.0f} MB free at "
                                    f"{self.state.path}, the survey keeps "
                                    f"{self.min_free_mb:.0f} MB")

    def execute(self, step: Step, image: np.ndarray | None = None) -> MsgGenerator[End | None]:
        """Run one step of the policy; an `End` is returned, not run."""
        if isinstance(step, End):
            return step
        if isinstance(step, EpisodeEnd):
            yield from record_episode(self.episodes, step)
            self.events["episodes"] += 1
            return None
        if isinstance(step, Move):  # the cycle's checkpoint precedes it
            yield from move_scanner(self.centre, step.x_nm, step.y_nm)
            return None
        yield from bps.checkpoint()
        self.events["actions"] += 1  # every other step records one action event
        if isinstance(step, NewArea):
            yield from change_area(self.stm, self.actions, reason=step.reason)
        elif isinstance(step, Recover):
            yield from recover(self.stm, step.command, self.actions, reason=step.reason)
            self.policy.recovered(step.command)
        elif isinstance(step, Act):
            yield from self.act(step.index, step.x_nm, step.y_nm, step.reason)
        elif isinstance(step, Condition):
            yield from self.condition(step, image)
        return None

    def act(self, index: int, x_nm: float, y_nm: float, reason: str,
            **suggestion: object) -> MsgGenerator[str]:
        name = self.stm.actions[index].name
        outcome = yield from condition_tip(self.stm, name, self.actions, reason=reason,
                                           x_nm=x_nm, y_nm=y_nm,
                                           episode=self.policy.counters.episode, **suggestion)
        self.policy.acted(index, x_nm, y_nm)
        return outcome

    def condition(self, step: Condition, image: np.ndarray) -> MsgGenerator[None]:
        """Ask for an action; run it if allowed, else record the refusal."""
        episode = self.policy.counters.episode
        try:
            index, q_values = self.choices.choose(image, step.allowed, step.chooser)
        except NoActionAllowed as error:
            yield from record_action(self.actions, "none", -1, x_nm=step.x_nm, y_nm=step.y_nm,
                                     reason=str(error), outcome="refused", episode=episode,
                                     allowed=step.allowed, chooser=step.chooser)
            return
        if not (0 <= index < len(step.allowed) and step.allowed[index]):
            yield from record_action(self.actions, "refused", index, x_nm=step.x_nm,
                                     y_nm=step.y_nm, outcome="refused", episode=episode,
                                     reason=f"the agent chose action {index}, outside the "
                                            "allowed set", allowed=step.allowed,
                                     q_values=q_values, chooser=step.chooser)
            return
        yield from self.act(index, step.x_nm, step.y_nm, "bad tip", allowed=step.allowed,
                            q_values=q_values, chooser=step.chooser)
        self.choices.acted(image, step.allowed, index)
