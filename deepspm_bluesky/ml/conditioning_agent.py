"""`ConditioningAgent`: a double DQN that reads the tip from the image and picks an action.

DeepSPM's agent (Krull et al., Commun. Phys. 3, 54 (2020)): the classifier's CNN trunk, one
Q value per action of the table, actions that do not fit the free area masked with -inf,
double DQN targets (van Hasselt et al., AAAI 2016, arXiv:1509.06461) from a target network
synced every 100 updates, replay of 15 000 transitions, learning from 2 000 on, epsilon
from 1 to 0.05, gamma 0.95, Adam 5e-4, batch 64.

What changed: by default the trunk is the shipped classifier's and stays frozen (its pooled
features tell the tip states apart; a linear read-out of them names the state of 97 % of
simulated images), so its features are computed once per frame and kept in the replay
buffer, and an update trains the head only: about a millisecond on a CPU instead of a
forward and backward pass of the CNN. ``train_trunk=True`` trains everything, as DeepSPM.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepspm_bluesky.actions import ActionTable, load_actions

from .agents import Transition, allowed_indices
from .classifier import CheckpointError, TipClassifier
from .inference import inference
from .preprocessing import preprocess
from .qnetwork import QNetwork, inference_trunk, pooled
from .replay import ReplayBuffer

CHECKPOINT_FORMAT = "deepspm_bluesky.ConditioningAgent"
CHECKPOINT_VERSION = 1
PRETRAINED_NAME = "conditioning_agent.pt"
TRUNKS = ("classifier", "fresh")


class AgentCheckpointError(CheckpointError):
    """A conditioning-agent checkpoint that cannot be used: unreadable, foreign, or
    inconsistent with this code."""


@dataclass(frozen=True)
class AgentSettings:
    """Hyper-parameters of `ConditioningAgent` (defaults: DeepSPM's where it has one).

    Attributes
    ----------
    gamma
        Discount factor.
    learning_rate
        Adam step size.
    batch_size
        Transitions per update.
    buffer_size
        Transitions kept in the replay buffer.
    learning_starts
        Transitions stored before the first update.
    target_sync
        Updates between copies of the online network into the target network.
    epsilon_start, epsilon_end, epsilon_steps
        Exploration: epsilon falls linearly over this many observed transitions.
    updates_per_transition
        Gradient updates per observed transition once learning has started.
    dueling
        Dueling Q head.
    hidden
        Width of the head's hidden layer.
    train_trunk
        Also train the CNN trunk (slow on a CPU); False keeps it frozen.
    seed
        Seed of weights, exploration and replay sampling.
    """

    gamma: float = 0.95
    learning_rate: float = 5e-4
    batch_size: int = 64
    buffer_size: int = 15_000
    learning_starts: int = 2_000
    target_sync: int = 100
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_steps: int = 500
    updates_per_transition: int = 1
    dueling: bool = True
    hidden: int = 128
    train_trunk: bool = False
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AgentSettings:
        """Settings from a dict (unknown keys are refused)."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown agent settings {sorted(unknown)}")
        return cls(**values)


class ConditioningAgent:
    """Double DQN conditioning agent with action masking and a replay buffer.

    Follows the `Agent` protocol: ``suggest(image, allowed)`` picks an action for a bad
    tip, ``observe(transition)`` stores what came of it and learns.

    Parameters
    ----------
    actions
        The action table the Q values are for (default: DeepSPM's).
    settings
        Hyper-parameters (`AgentSettings`).
    trunk
        "classifier": start from the shipped tip classifier's trunk; "fresh": random
        weights; or a `TipClassifier` whose trunk to copy.
    explore
        True: epsilon-greedy while learning; False: always the best allowed action (the
        shipped agent, in operational mode).

    Examples
    --------
    >>> from deepspm_bluesky.sim import SimulatedMicroscope
    >>> agent = ConditioningAgent.pretrained()
    >>> image = SimulatedMicroscope(seed=1, tip_state="double").scan(0.0, 0.0, 10e-9, 64)
    >>> allowed = np.ones(len(agent.actions), bool)
    >>> agent.actions[agent.suggest(image, allowed)].kind in ("pulse", "dip", "stall")
    True
    """

    def __init__(self, actions: ActionTable | None = None, *,
                 settings: AgentSettings | None = None,
                 trunk: str | TipClassifier = "classifier", explore: bool = True,
                 metadata: dict[str, Any] | None = None) -> None:
        self.actions = actions if actions is not None else load_actions()
        self.settings = settings if settings is not None else AgentSettings()
        self.explore = explore
        self.metadata = dict(metadata or {})
        n = len(self.actions)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            self.network = QNetwork(n, hidden=self.settings.hidden,
                                    dueling=self.settings.dueling,
                                    trunk=_classifier_trunk(trunk))
        self.network.eval()  # batch norm on its running statistics, always
        self.network.trunk.requires_grad_(self.settings.train_trunk)
        self.target = copy.deepcopy(self.network)
        self.target.requires_grad_(False)
        self._optimizer: torch.optim.Adam | None = None  # made when first needed
        self.buffer = ReplayBuffer(
            self.settings.buffer_size, n_actions=n,
            feature_size=0 if self.settings.train_trunk else self.network.feature_size)
        self.rng = np.random.default_rng(self.settings.seed)
        self.transitions_seen = 0
        self.updates = 0
        self._pending: tuple[np.ndarray, int] | None = None  # last next-frame and its serial
        self._fast_trunk: nn.Module | None = None  # inference copy of the frozen trunk

    @property
    def optimizer(self) -> torch.optim.Adam:
        """Adam over the trained parameters, made on first use: making one imports torch's
        compiler stack (3-6 s on the test machine), which an agent that only suggests never
        needs."""
        if self._optimizer is None:
            trained = self.network.parameters() if self.settings.train_trunk \
                else self.network.head.parameters()
            self._optimizer = torch.optim.Adam(trained, lr=self.settings.learning_rate)
        return self._optimizer

    def __repr__(self) -> str:
        return (f"ConditioningAgent({len(self.actions)} actions, dueling="
                f"{self.settings.dueling}, transitions={self.transitions_seen}, "
                f"updates={self.updates})")

    # -- deciding ----------------------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        """Current exploration rate (0 when not exploring)."""
        if not self.explore:
            return 0.0
        s = self.settings
        fraction = min(self.transitions_seen / max(s.epsilon_steps, 1), 1.0)
        return s.epsilon_start + fraction * (s.epsilon_end - s.epsilon_start)

    def frames(self, images: np.ndarray) -> np.ndarray:
        """Network input (n, 64, 64) float32 from raw heights (m) or normalised images."""
        return preprocess(images)

    def features(self, frames: np.ndarray) -> torch.Tensor:
        """Trunk features (n, feature_size) of normalised frames."""
        with torch.no_grad():
            return self._features(torch.from_numpy(frames).unsqueeze(1))

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """Features through the fast inference copy of a frozen trunk (the trunk itself when
        it is trained)."""
        if self.settings.train_trunk:
            return self.network.features(images)
        if self._fast_trunk is None:
            self._fast_trunk = inference_trunk(self.network.trunk)
        return pooled(self._fast_trunk(images.contiguous(memory_format=torch.channels_last)))

    def q_values(self, image: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """Q value of every action for one image (raw or normalised); masked ones -inf.

        Parameters
        ----------
        image
            One 64 x 64 image, raw heights in metres or normalised.
        allowed
            Optional boolean mask over the action table.

        Returns
        -------
        numpy.ndarray
            float64, one value per action.
        """
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected one 2-D image, got shape {image.shape}")
        with inference(1):  # one thread, faster than no_grad for a batch of one
            frames = torch.from_numpy(self.frames(image)).unsqueeze(1)
            q = self.network.head(self._features(frames))[0].double().numpy()
        if allowed is not None:
            q = np.where(self._mask(allowed), q, -np.inf)
        return q

    def q_from_features(self, features: torch.Tensor) -> np.ndarray:
        """Q values (n, n_actions) from trunk features."""
        with torch.no_grad():
            return self.network.head(features).double().numpy()

    def select(self, q: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Epsilon-greedy masked choice for each row of Q values (n, n_actions)."""
        masks = np.atleast_2d(np.asarray(allowed, bool))
        choices = np.empty(len(masks), np.int64)
        for i, mask in enumerate(masks):
            allowed_here = allowed_indices(mask)
            if self.epsilon > 0 and self.rng.random() < self.epsilon:
                choices[i] = self.rng.choice(allowed_here)
            else:
                choices[i] = allowed_here[np.argmax(q[i][allowed_here])]
        return choices

    def suggest(self, image: np.ndarray, allowed: np.ndarray) -> int:
        """Index of the action to take on `image` among the `allowed` ones.

        Raises
        ------
        NoActionAllowed
            If `allowed` is all False.
        """
        mask = self._mask(allowed)
        allowed_indices(mask)
        q = self.q_values(image)
        return int(self.select(q[None], mask[None])[0])

    def _mask(self, allowed: np.ndarray) -> np.ndarray:
        mask = np.asarray(allowed, bool)
        if mask.shape != (len(self.actions),):
            raise ValueError(f"allowed mask of shape {mask.shape}, the action table has "
                             f"{len(self.actions)} actions")
        return mask

    def policy_copy(self) -> ConditioningAgent:
        """The current greedy policy alone (no exploration, an empty one-slot buffer): small
        to pickle, e.g. for evaluation in worker processes."""
        settings = replace(self.settings, buffer_size=1)
        copy_ = ConditioningAgent(self.actions, settings=settings, trunk="fresh", explore=False,
                                  metadata=self.metadata)
        if copy_.network.trunk_shape != self.network.trunk_shape:
            copy_.network = copy.deepcopy(self.network)
        copy_.network.load_state_dict(self.network.state_dict())
        return copy_

    # -- learning ----------------------------------------------------------------------------
    def add_frame(self, frame: np.ndarray, features: torch.Tensor | None = None) -> int:
        """Store one normalised frame (its features computed if not given); its serial."""
        if self.buffer.feature_size:
            if features is None:
                features = self.features(frame[None])[0]
            return self.buffer.add_frame(frame, features.numpy())
        return self.buffer.add_frame(frame)

    def remember(self, frame_id: int, allowed: np.ndarray, action: int, reward: float,
                 next_frame_id: int, next_allowed: np.ndarray, done: bool) -> None:
        """Store one transition between stored frames; counts towards the epsilon schedule."""
        self.buffer.add(frame_id, allowed, action, reward, next_frame_id, next_allowed, done)
        self.transitions_seen += 1

    def observe(self, transition: Transition) -> dict[str, float]:
        """Store `transition` and learn from the buffer.

        The frame a transition starts from is stored only if it is not the previous
        transition's next frame. Returns what was learned: ``loss`` (mean over this
        call's updates; absent before learning starts), ``updates``, ``epsilon``,
        ``buffer``.
        """
        frame, next_frame = self.frames(np.stack([transition.image, transition.next_image]))
        if self._pending is not None and self.buffer.holds(self._pending[1]) \
                and np.array_equal(self._pending[0], frame):
            frame_id = self._pending[1]
        else:
            frame_id = self.add_frame(frame)
        next_id = self.add_frame(next_frame)
        self.remember(frame_id, transition.allowed, int(transition.action),
                      float(transition.reward), next_id, transition.next_allowed,
                      bool(transition.done))
        self._pending = None if transition.done else (next_frame, next_id)
        return self.learn()

    def learn(self, updates: int | None = None) -> dict[str, float]:
        """Run `updates` gradient updates (default: ``updates_per_transition``) once the
        buffer holds ``learning_starts`` transitions; return the mean loss and counters."""
        report = {"updates": float(self.updates), "epsilon": self.epsilon,
                  "buffer": float(len(self.buffer))}
        if len(self.buffer) < max(self.settings.learning_starts, 1):
            return report
        n = self.settings.updates_per_transition if updates is None else updates
        losses = [self.update() for _ in range(n)]
        if losses:
            report["loss"] = float(np.mean(losses))
        report["updates"] = float(self.updates)
        return report

    def update(self) -> float:
        """One double-DQN gradient step on a sampled batch; returns the Huber loss."""
        s = self.settings
        cached = self.buffer.feature_size > 0
        batch = self.buffer.sample(s.batch_size, self.rng, features=cached)
        if cached:
            online = self.network.head
            q_all = online(batch.frames)
            with torch.no_grad():
                next_online, next_target = online(batch.next_frames), \
                    self.target.head(batch.next_frames)
        else:
            online = self.network
            q_all = online(batch.frames.unsqueeze(1))
            with torch.no_grad():
                next_frames = batch.next_frames.unsqueeze(1)
                next_online, next_target = online(next_frames), self.target(next_frames)
        q = q_all.gather(1, batch.actions[:, None]).squeeze(1)
        with torch.no_grad():
            masked = next_online.masked_fill(~batch.next_allowed, -math.inf)
            best = masked.argmax(dim=1, keepdim=True)
            next_value = next_target.gather(1, best).squeeze(1)
            stuck = ~batch.next_allowed.any(dim=1)
            alive = ~(batch.done | stuck)
            target = batch.rewards + s.gamma * torch.where(alive, next_value, 0.0)
        loss = nn.functional.smooth_l1_loss(q, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(online.parameters(), 10.0)
        self.optimizer.step()
        self.updates += 1
        if self.updates % s.target_sync == 0:
            self.target.load_state_dict(self.network.state_dict())
        return loss.item()

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | Path, *, policy_only: bool = False) -> Path:
        """Write the agent to `path` (torch file, readable with ``weights_only=True``).

        Parameters
        ----------
        path
            File to write (atomically: a crash leaves the old file).
        policy_only
            Only what `suggest` needs (settings, actions, online network, counters, so that
            exploration goes on from its floor): a small file to ship. By default
            everything to resume exactly: also target network, optimiser, replay buffer
            and random state.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "actions": self.actions.names, "settings": asdict(self.settings),
            "channels": list(self.network.channels),
            "line_differences": self.network.line_differences,
            "metadata": json.loads(json.dumps(self.metadata, default=str)),
            "network": self.network.state_dict(), "policy_only": policy_only,
            "counters": {"transitions_seen": self.transitions_seen, "updates": self.updates},
        }
        if not policy_only:
            checkpoint.update(
                target=self.target.state_dict(), optimizer=None if self._optimizer is None
                else self._optimizer.state_dict(),
                buffer=self.buffer.state_dict(), explore=self.explore,
                rng=json.dumps(self.rng.bit_generator.state),
                pending=None if self._pending is None else
                {"frame": torch.from_numpy(self._pending[0].copy()), "id": self._pending[1]},
            )
        partial = path.with_name(path.name + ".partial")
        torch.save(checkpoint, partial)
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, *, actions: ActionTable | None = None,
             explore: bool | None = None) -> ConditioningAgent:
        """An agent from a checkpoint written by `save`.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        AgentCheckpointError
            If the file is not a readable agent checkpoint, or its action table or
            weights do not fit.
        """
        checkpoint = _read_checkpoint(Path(path))
        try:
            settings = AgentSettings.from_dict(checkpoint["settings"])
        except (TypeError, ValueError) as error:
            raise AgentCheckpointError(f"{path}: bad settings ({error})") from None
        agent = cls(actions, settings=settings, trunk="fresh", explore=False,
                    metadata=checkpoint["metadata"])
        agent._take(checkpoint, Path(path))
        if explore is not None:
            agent.explore = explore
        return agent

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint saved by an agent with the same settings and table."""
        path = Path(path)
        checkpoint = _read_checkpoint(path)
        if checkpoint["settings"] != asdict(self.settings):
            raise AgentCheckpointError(f"{path}: saved with other settings "
                                       f"({checkpoint['settings']})")
        self._take(checkpoint, path)

    def _take(self, checkpoint: dict[str, Any], path: Path) -> None:
        if list(checkpoint["actions"]) != self.actions.names:
            raise AgentCheckpointError(f"{path}: saved for the actions {checkpoint['actions']}, "
                                       f"this table has {self.actions.names}")
        self._fast_trunk = None
        try:
            # checkpoints written before the "-lines" trunks have no "line_differences"
            shape = tuple(checkpoint["channels"]), bool(checkpoint.get("line_differences"))
            if shape != self.network.trunk_shape:
                self.network = QNetwork(len(self.actions), channels=shape[0],
                                        line_differences=shape[1],
                                        hidden=self.settings.hidden,
                                        dueling=self.settings.dueling).eval()
                self._rebuild_learning_parts()
            self.network.load_state_dict(checkpoint["network"])
            self.target.load_state_dict(checkpoint.get("target", checkpoint["network"]))
            counters = checkpoint.get("counters", {})  # the epsilon schedule goes on from here
            self.transitions_seen = int(counters.get("transitions_seen", 0))
            self.updates = int(counters.get("updates", 0))
            if not checkpoint["policy_only"]:
                self._take_optimizer(checkpoint["optimizer"])
                self.buffer = ReplayBuffer.from_state_dict(checkpoint["buffer"])
                self.rng.bit_generator.state = json.loads(checkpoint["rng"])
                self.explore = bool(checkpoint["explore"])
                pending = checkpoint["pending"]
                self._pending = None if pending is None else \
                    (pending["frame"].numpy(), int(pending["id"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise AgentCheckpointError(f"{path}: does not fit this agent ({error})") from None

    def _take_optimizer(self, state: dict[str, Any] | None) -> None:
        """The saved optimiser state; None (saved before any learning step) leaves it to be
        made fresh when needed."""
        if state is None:
            self._optimizer = None
        else:
            self.optimizer.load_state_dict(state)

    def _rebuild_learning_parts(self) -> None:
        """Target, optimiser and buffer for a network rebuilt with another trunk shape."""
        self.network.trunk.requires_grad_(self.settings.train_trunk)
        self.target = copy.deepcopy(self.network).requires_grad_(False)
        self._optimizer = None
        self.buffer = ReplayBuffer(
            self.settings.buffer_size, n_actions=len(self.actions),
            feature_size=0 if self.settings.train_trunk else self.network.feature_size)

    @classmethod
    def pretrained(cls, *, explore: bool = False) -> ConditioningAgent:
        """The policy shipped in the package (trained on the simulator; no download)."""
        weights = resources.files("deepspm_bluesky.ml") / "weights" / PRETRAINED_NAME
        with resources.as_file(weights) as path:
            return cls.load(path, explore=explore)


def _classifier_trunk(trunk: str | TipClassifier) -> nn.Module | None:
    """The trunk to start from: the classifier's, or None for fresh weights."""
    if isinstance(trunk, TipClassifier):
        classifier = trunk
    elif trunk == "classifier":
        classifier = TipClassifier.pretrained()
    elif trunk == "fresh":
        return None
    else:
        raise ValueError(f"trunk must be one of {TRUNKS} or a TipClassifier, got {trunk!r}")
    if not hasattr(classifier.network, "trunk"):
        raise ValueError(f"the {classifier.architecture!r} classifier has no trunk to share")
    return classifier.network.trunk


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no conditioning-agent checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign or corrupt files
        raise AgentCheckpointError(f"{path}: not a readable torch checkpoint "
                                   f"({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise AgentCheckpointError(f"{path}: not a conditioning-agent checkpoint "
                                   f"(expected format {CHECKPOINT_FORMAT!r})")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise AgentCheckpointError(f"{path}: checkpoint version {checkpoint.get('version')!r}, "
                                   f"this code reads version {CHECKPOINT_VERSION}")
    missing = {"actions", "settings", "channels", "metadata", "network",
               "policy_only"} - set(checkpoint)
    if missing:
        raise AgentCheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
    return checkpoint
