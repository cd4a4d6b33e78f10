"""How well a tip classifier separates good from bad tips: ROC, accuracy, confusion matrix.

Plain numpy (and scipy's ranks), so no scikit-learn is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from ..judging import GOOD_TIP_THRESHOLD


def _checked_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels, float).ravel(), np.asarray(scores, float).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (bad tip) or 1 (good tip)")
    if labels.min(initial=1) == labels.max(initial=0):
        raise ValueError("ROC needs both good (1) and bad (0) examples")
    return labels, scores


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random good > score of a random bad).

    Computed from ranks (Mann-Whitney U), ties counting one half.
    """
    labels, scores = _checked_scores(labels, scores)
    ranks = rankdata(scores)
    n_pos = labels.sum()
    n_neg = labels.size - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    labels, scores = _checked_scores(labels, scores)
    order = np.argsort(-scores, kind="stable")
    labels, scores = labels[order], scores[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(labels)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


@dataclass
class Evaluation:
    """Scores of a classifier on a labelled set at a decision threshold.

    The confusion matrix is ``[[TN, FP], [FN, TP]]`` with rows = truth (bad, good) and
    columns = verdict (bad, good); "positive" means a good tip.
    """

    roc_auc: float
    threshold: float
    accuracy: float
    precision: float
    recall: float
    confusion: np.ndarray
    accuracy_by_state: dict[str, float]
    count_by_state: dict[str, int]
    false_positive_rate: np.ndarray = field(repr=False)
    true_positive_rate: np.ndarray = field(repr=False)

    def report(self) -> str:
        """A few lines of text for the terminal."""
        (tn, fp), (fn, tp) = self.confusion
        lines = [
            f"ROC-AUC            {self.roc_auc:.4f}",
            f"accuracy @ {self.threshold:.2f}    {self.accuracy:.4f}",
            f"precision @ {self.threshold:.2f}   {self.precision:.4f}",
            f"recall @ {self.threshold:.2f}      {self.recall:.4f}",
            "confusion (rows truth, cols verdict)",
            "             bad    good",
            f"  bad     {tn:6d}  {fp:6d}",
            f"  good    {fn:6d}  {tp:6d}",
            "accuracy by tip state",
        ]
        lines += [f"  {state:<24s}{acc:.4f}  (n={self.count_by_state[state]})"
                  for state, acc in self.accuracy_by_state.items()]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """The numbers as plain Python types (for JSON)."""
        return {
            "roc_auc": self.roc_auc, "threshold": self.threshold, "accuracy": self.accuracy,
            "precision": self.precision, "recall": self.recall,
            "confusion": self.confusion.tolist(), "accuracy_by_state": self.accuracy_by_state,
            "count_by_state": self.count_by_state,
        }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def evaluate_scores(labels: np.ndarray, scores: np.ndarray, states: np.ndarray | None = None,
                    *, threshold: float = GOOD_TIP_THRESHOLD) -> Evaluation:
    """Evaluate P(good) `scores` against `labels` (1 = good) at `threshold`.

    Parameters
    ----------
    labels, scores
        Truth and predicted probability of a good tip, one per image.
    states
        Tip state of each image, for the accuracy by state (default: "good"/"bad").
    threshold
        A tip counts as good when its score is at least this (DeepSPM: 0.9).
    """
    labels, scores = _checked_scores(labels, scores)
    states = np.where(labels == 1, "good", "bad") if states is None else np.asarray(states)
    verdict = scores >= threshold
    truth = labels == 1
    tp, fp = int(np.sum(verdict & truth)), int(np.sum(verdict & ~truth))
    fn, tn = int(np.sum(~verdict & truth)), int(np.sum(~verdict & ~truth))
    correct = verdict == truth
    names = sorted(set(states.tolist()), key=lambda s: (s != "good", s))
    fpr, tpr = roc_curve(labels, scores)
    return Evaluation(
        roc_auc=roc_auc(labels, scores), threshold=threshold,
        accuracy=float(correct.mean()), precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn),
        confusion=np.array([[tn, fp], [fn, tp]]),
        accuracy_by_state={s: float(correct[states == s].mean()) for s in names},
        count_by_state={s: int(np.sum(states == s)) for s in names},
        false_positive_rate=fpr, true_positive_rate=tpr,
    )


def save_roc_plot(evaluation: Evaluation, path: str | Path) -> Path:
    """Draw the ROC curve into an image file (matplotlib, Agg backend: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(evaluation.false_positive_rate, evaluation.true_positive_rate,
              label=f"AUC = {evaluation.roc_auc:.4f}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axes.set(xlabel="false positive rate (bad called good)",
             ylabel="true positive rate (good called good)", xlim=(0, 1), ylim=(0, 1.01),
             title="Tip classifier ROC")
    axes.legend(loc="lower right")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
