"""A gymnasium environment over the simulated STM: condition a bad tip until it is good.

One episode is one DeepSPM conditioning episode: it starts on a bad tip (as judged by the
classifier), each step applies one action of the table at the centre of the largest free
square of the last image, moves on and rescans (cleaning a crash, re-approaching after a
lost contact and moving away from debris as the survey does), and the episode ends when the
classifier says the tip is good, or is truncated after `MAX_ACTIONS` actions.

Registered as `ENV_ID` when `deepspm_bluesky.ml` is imported::

    import gymnasium as gym
    import deepspm_bluesky.ml
    env = gym.make("deepspm/SpmTipConditioning-v0")
    envs = gym.make_vec("deepspm/SpmTipConditioning-v0", num_envs=2,
                        vectorization_mode="async")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any

import gymnasium as gym
import numpy as np

from deepspm_bluesky.actions import ActionTable, load_actions
from deepspm_bluesky.imaging import ProcessedImage, process_image
from deepspm_bluesky.navigation import CRASH_RADIUS_NM, Navigator
from deepspm_bluesky.sim import BAD_STATES, SimulatedMicroscope, Tip, random_tip
from deepspm_bluesky.sim.microscope import SETTLE_S
from deepspm_bluesky.sim.tip import degraded

from .evaluation import GOOD_TIP_THRESHOLD
from .registration import ENV_ID

__all__ = ["ENV_ID", "JUDGES", "MAX_ACTIONS", "TipConditioningEnv", "classifier_judge",
           "make_vector_env", "truth_judge"]
from .reward import TIP_CLEAN_S, conditioning_reward

MAX_ACTIONS = 100  # DeepSPM: an episode ends after 100 actions
FRAME_NM = 10.0
PIXELS = 64
EXTRA_DEFECT = 0.25  # chance that an episode's bad tip carries a second defect
MAX_RESCANS = 50  # crash/contact/debris rescans of one step before a new approach area
MAX_START_TRIES = 20  # bad tips drawn at most until the judge calls one bad
Judge = Callable[[ProcessedImage, Tip], float]


@lru_cache(maxsize=1)
def _shipped_classifier():
    from .classifier import TipClassifier

    return TipClassifier.pretrained()


def classifier_judge(processed: ProcessedImage, tip: Tip) -> float:
    """P(good tip) from the shipped `TipClassifier` (what the survey decides on)."""
    return float(_shipped_classifier().predict(processed.normalized, normalized=True)[0])


def truth_judge(processed: ProcessedImage, tip: Tip) -> float:
    """1 for a good tip, 0 else: the simulator's ground truth (fast, for tests)."""
    return 1.0 if tip.is_good else 0.0


JUDGES: dict[str, Judge] = {"classifier": classifier_judge, "truth": truth_judge}


class TipConditioningEnv(gym.Env):
    """Condition the tip of a simulated STM until the classifier calls it good.

    Observation: the normalised 64 x 64 image (float32 in [-1.5, 1.5], DeepSPM's
    normalisation after robust plane flattening). Action: an index into the action table.
    ``info["action_mask"]`` (int8, one per action) marks the actions whose required free
    area fits in the image's largest empty square; a masked action is refused by the
    instrument and the step costs the rescan only (``info["refused"]``).

    Reward: `deepspm_bluesky.ml.reward.conditioning_reward` of the instrument time the step
    took (-1 for a plain action, far more for a crash and its clean) plus 10 when the tip
    is judged good, which ends the episode; truncation after `max_actions` actions.

    Parameters
    ----------
    actions
        Action table (default: DeepSPM's).
    judge
        "classifier" (the shipped `TipClassifier`, as in the survey), "truth" (the
        simulator's label), or a callable ``(processed_image, tip) -> P(good)``.
    max_actions
        Actions after which an episode is truncated.
    start_states
        Bad states an episode's tip is drawn from (uniformly).
    extra_defect
        Probability that the starting tip carries one more random defect.

    Notes
    -----
    ``reset(seed=s)`` builds a fresh simulated microscope from `s`, so an episode is a
    function of its seed and the actions taken. ``info`` also holds the true tip state
    (``"tip_state"``), the outcome of the action, P(good), the free square side
    (``"free_nm"``), the step's instrument time and the crashes it cost.

    Examples
    --------
    >>> env = TipConditioningEnv(judge="truth")
    >>> image, info = env.reset(seed=1)
    >>> image.shape, info["action_mask"].dtype
    ((64, 64), dtype('int8'))
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, *, actions: ActionTable | None = None,
                 judge: str | Judge = "classifier", max_actions: int = MAX_ACTIONS,
                 start_states: Sequence[str] = BAD_STATES,
                 extra_defect: float = EXTRA_DEFECT) -> None:
        self.actions = actions if actions is not None else load_actions()
        if isinstance(judge, str):
            if judge not in JUDGES:
                raise ValueError(f"unknown judge {judge!r}; known: {sorted(JUDGES)} "
                                 "or a callable")
            judge = JUDGES[judge]
        self.judge = judge
        if max_actions < 1:
            raise ValueError(f"max_actions must be >= 1, got {max_actions}")
        unknown = set(start_states) - set(BAD_STATES)
        if unknown or not start_states:
            raise ValueError(f"start_states must be some of {BAD_STATES}, got {start_states}")
        self.max_actions = max_actions
        self.start_states = tuple(start_states)
        self.extra_defect = extra_defect
        self.observation_space = gym.spaces.Box(-1.5, 1.5, (PIXELS, PIXELS), np.float32)
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self.microscope: SimulatedMicroscope | None = None
        self.navigator: Navigator | None = None
        self._processed: ProcessedImage | None = None
        self._actions_taken = 0

    # -- gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self.microscope is None:
            self.microscope = SimulatedMicroscope(seed=int(self.np_random.integers(2**31)))
            self.navigator = Navigator(self.microscope.scan_range_m() * 1e9)
        for _ in range(MAX_START_TRIES):
            self.microscope.tip = self._bad_tip()
            processed, crashes = self._scan_until_ok()
            p_good = self.judge(processed, self.microscope.tip)
            if p_good < GOOD_TIP_THRESHOLD:
                break
        self._processed, self._actions_taken = processed, 0
        return self._observation(), self._info(p_good=p_good, outcome="none", elapsed_s=0.0,
                                               crashes=crashes, refused=False)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._processed is None:
            raise RuntimeError("call reset() before step()")
        index = int(action)
        if not 0 <= index < len(self.actions):
            raise ValueError(f"action {action!r} is not an index into the table of "
                             f"{len(self.actions)} actions")
        microscope, nav = self.microscope, self.navigator
        started_s = microscope.time_s
        refused = not self._processed.allowed[index]
        outcome = "refused"
        if refused:  # nothing done here: move on as after a measurement
            nav.forbid(*nav.position, FRAME_NM / 2)
        else:
            chosen = self.actions[index]
            square = self._processed.square
            x_nm, y_nm = nav.position[0] + square.x_nm, nav.position[1] + square.y_nm
            microscope.condition(chosen, x_nm * 1e-9, y_nm * 1e-9)
            outcome = microscope.last_outcome
            nav.forbid(x_nm, y_nm, chosen.forbid_radius_nm)
        self._processed, crashes = self._scan_until_ok()
        elapsed_s = microscope.time_s - started_s
        p_good = self.judge(self._processed, microscope.tip)
        terminated = p_good >= GOOD_TIP_THRESHOLD
        self._actions_taken += 1
        truncated = not terminated and self._actions_taken >= self.max_actions
        reward = conditioning_reward(elapsed_s, good=terminated)
        info = self._info(p_good=p_good, outcome=outcome, elapsed_s=elapsed_s, crashes=crashes,
                          refused=refused)
        return self._observation(), reward, terminated, truncated, info

    # -- the instrument around an action ---------------------------------------------------
    def _bad_tip(self) -> Tip:
        rng = self.np_random
        tip = random_tip(rng, str(rng.choice(self.start_states)))
        if rng.random() < self.extra_defect:
            tip = degraded(tip, rng)
        return tip

    def _move_on(self) -> tuple[float, float]:
        """Next free location (nm); a new approach area when this one is used up."""
        nav = self.navigator
        location = nav.next_location()
        if location is None:
            self.microscope.move_area()
            nav.new_area()
            location = nav.next_location()
        nav.move_to(*location)
        return location

    def _scan_until_ok(self) -> tuple[ProcessedImage, int]:
        """Move on and scan until an image passes the fast checks, recovering as the survey
        does; return it and the number of crashes on the way."""
        microscope, nav = self.microscope, self.navigator
        crashes = 0
        for attempt in range(MAX_RESCANS + 1):
            if attempt == MAX_RESCANS:  # stuck: try a fresh approach area
                microscope.move_area()
                nav.new_area()
            x_nm, y_nm = self._move_on()
            image = microscope.scan(x_nm * 1e-9, y_nm * 1e-9, FRAME_NM * 1e-9, PIXELS)
            processed = process_image(image, size_nm=FRAME_NM, z_range_m=microscope.z_range_m(),
                                      actions=self.actions)
            verdict = processed.check.verdict
            if verdict == "crash":
                crashes += 1
                microscope.tip_clean(x_nm * 1e-9, y_nm * 1e-9)
                microscope.idle(max(TIP_CLEAN_S - SETTLE_S, 0.0))
                nav.forbid(x_nm, y_nm, CRASH_RADIUS_NM)
            elif verdict == "no_contact":
                microscope.approach()
            elif verdict == "debris":
                nav.mark_debris()
            else:
                nav.clear_debris()
                return processed, crashes
        return processed, crashes

    def _observation(self) -> np.ndarray:
        return self._processed.normalized.astype(np.float32)

    def _info(self, *, p_good: float, outcome: str, elapsed_s: float, crashes: int,
              refused: bool) -> dict[str, Any]:
        return {
            "action_mask": self._processed.allowed.astype(np.int8),
            "p_good": p_good,
            "tip_state": self.microscope.tip.state,
            "outcome": outcome,
            "refused": refused,
            "free_nm": self._processed.square.size_nm,
            "elapsed_s": elapsed_s,
            "crashes": crashes,
        }


def _worker_env(kwargs: dict[str, Any]) -> gym.Env:
    """An environment for a worker process, with torch on one thread (one core per worker)."""
    import torch

    torch.set_num_threads(1)
    return TipConditioningEnv(**kwargs)


def make_vector_env(num_envs: int = 2, *, asynchronous: bool = True,
                    **env_kwargs: Any) -> gym.vector.VectorEnv:
    """`num_envs` environments stepped together (gymnasium's vector API).

    Parameters
    ----------
    num_envs
        Number of environments.
    asynchronous
        True: one worker process each (`AsyncVectorEnv`, spawned, torch on one thread),
        so simulation and judging use several cores; False: all in this process.
    **env_kwargs
        Passed to `TipConditioningEnv`.

    Notes
    -----
    Finished episodes reset in the same step (``AutoresetMode.SAME_STEP``): the last image
    of an episode is in ``info["final_obs"]`` and its info in ``info["final_info"]``.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    mode = gym.vector.AutoresetMode.SAME_STEP
    if asynchronous:
        fns = [partial(_worker_env, env_kwargs) for _ in range(num_envs)]
        return gym.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=mode)
    fns = [partial(TipConditioningEnv, **env_kwargs) for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)

