"""The classifier and the agent chosen by name, so a queue server or a command line can send them.

A name is ``"pretrained"`` (the shipped weights; for the classifier also
``"pretrained-ag100"``, trained on the default sample alone), ``"random"`` (agents only:
DeepSPM's random baseline) or the path of a checkpoint written by `TipClassifier.save` /
`ConditioningAgent.save`.
An unknown name or an unusable file raises `ValueError` naming it, before any run opens.
"""

from __future__ import annotations

from pathlib import Path

from .agents import Agent, RandomAgent
from .classifier import SHIPPED_WEIGHTS, TipClassifier
from .conditioning_agent import ConditioningAgent

CLASSIFIER_NAMES = tuple(SHIPPED_WEIGHTS)
AGENT_NAMES = ("pretrained", "random")


def classifier_named(name: str) -> TipClassifier:
    """The tip classifier called `name`: a shipped one (`CLASSIFIER_NAMES`) or a checkpoint
    path."""
    if name in CLASSIFIER_NAMES:
        return TipClassifier.pretrained(name)
    return _load("classifier", name, CLASSIFIER_NAMES, TipClassifier.load)


def agent_named(name: str, *, explore: bool = False, seed: int = 0) -> Agent:
    """The conditioning agent called `name`: ``"pretrained"``, ``"random"`` or a checkpoint.

    `explore` is the DQN's (training mode explores); `seed` the random agent's.
    """
    if name == "pretrained":
        return ConditioningAgent.pretrained(explore=explore)
    if name == "random":
        return RandomAgent(seed)
    return _load("agent", name, AGENT_NAMES,
                 lambda path: ConditioningAgent.load(path, explore=explore))


def _load(kind: str, name: str, names: tuple[str, ...], load):
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a name ({', '.join(names)}) or a checkpoint path, "
                         f"got {name!r}")
    path = Path(name).expanduser()
    if not path.is_file():
        raise ValueError(f"unknown {kind} {name!r}: neither {' nor '.join(names)} "
                         "nor a checkpoint file")
    try:
        return load(path)
    except (OSError, ValueError) as error:  # CheckpointError is a ValueError
        raise ValueError(f"{kind} {name!r} cannot be used: {error}") from None
