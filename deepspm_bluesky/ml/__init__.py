"""Machine learning: the tip classifier and the conditioning agent (torch, CPU)."""

from .agents import (
    Agent,
    FixedActionAgent,
    NoActionAllowed,
    RandomAgent,
    Transition,
    allowed_indices,
)
from .classifier import CheckpointError, TipClassifier
from .conditioning_agent import AgentCheckpointError, AgentSettings, ConditioningAgent
from .data import LabelledImages, load_folder, simulated_dataset
from .evaluation import Evaluation, evaluate_scores, roc_auc, save_roc_plot
from .networks import ARCHITECTURES, CompactNet, DeepSPMNet
from .ood import FeatureDensity
from .preprocessing import network_input
from .registration import ENV_ID, register_envs
from .training import TrainingResult, TrainingSettings, train_classifier

__all__ = [
    "AgentCheckpointError",
    "AgentSettings",
    "ConditioningAgent",
    "ENV_ID",
    "FixedActionAgent",
    "register_envs",
    "Agent",
    "NoActionAllowed",
    "RandomAgent",
    "Transition",
    "allowed_indices",
    "ARCHITECTURES",
    "CheckpointError",
    "CompactNet",
    "DeepSPMNet",
    "Evaluation",
    "FeatureDensity",
    "LabelledImages",
    "TipClassifier",
    "TrainingResult",
    "TrainingSettings",
    "evaluate_scores",
    "network_input",
    "load_folder",
    "roc_auc",
    "save_roc_plot",
    "simulated_dataset",
    "train_classifier",
]

register_envs()
