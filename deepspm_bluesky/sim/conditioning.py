"""What a conditioning action does to the tip: documented outcome probabilities.

An action has a strength ``s`` in [0, 1]: ``|bias_v| / 8`` for a pulse, ``|dip_nm| / 5`` for
a dip (clipped, so that a user's stronger actions count as the strongest). The outcome is one
of `OUTCOMES`, drawn with these probabilities (``tip`` is the tip before the action):

========  =========================================  ======================================
outcome   pulse                                      dip
========  =========================================  ======================================
reform    0.04 + 0.31 s^2, halved for a blunt tip    0.10 + 0.80 s
clean     0.10 + 0.30 s if contaminated/unstable     0.20 (1 - s) if contaminated/unstable
perturb   0.20                                       0.40 (1 - s)
crash     0                                          0.005 + 0.045 s^2
no_contact 0.04 s^2                                  0
none      the rest                                   the rest
========  =========================================  ======================================

For the DeepSPM table that gives, e.g., pulse 2.5 V: reform 0.07, perturb 0.20, none 0.73
(good tip); pulse 8 V: reform 0.35, lose contact 0.04; dip 0.8 nm: reform 0.23, perturb 0.34,
crash 0.006; dip 5 nm: reform 0.90, crash 0.05. Stalls, and any action on a crashed or
retracted tip, do nothing.

- reform: the apex is re-formed; the new tip is good with probability `good_after_reform`
  (pulse 0.25; dip 0.20 + 0.20 s, deeper dips coat the apex with more sample metal), else
  double, blunt, unstable or contaminated with weights `REFORMED_BAD_WEIGHTS`.
- clean: the adsorbate desorbs; contrast and instability shrink (`tip.cleaned`).
- perturb: every property changes a little (`tip.perturbed` with strength 0.3 + 0.7 s); a
  state changes only when a property crosses its visibility threshold.
- crash: the tip is stuck in the sample; only `tip_clean` recovers it.
- no_contact: the z controller loses the tunnelling current; `approach` recovers it.

Small pulses and dips therefore mostly leave the tip as it is or change it a little, large
dips re-form the apex. The sample side (craters, deposited clusters) is in `microscope`.
"""

from __future__ import annotations

import numpy as np

from ..actions import Action
from .tip import BAD_STATES, Tip, cleaned, perturbed, random_tip

OUTCOMES = ("none", "perturb", "clean", "reform", "crash", "no_contact")
PULSE_FULL_V = 8.0
DIP_FULL_NM = 5.0
REFORMED_BAD_WEIGHTS = {"double": 0.35, "blunt": 0.25, "unstable": 0.2, "contaminated": 0.2}


def strength(action: Action) -> float:
    """Action strength in [0, 1]: |bias| / 8 V for pulses, |dip| / 5 nm for dips, 0 else."""
    if action.kind == "pulse":
        return min(abs(action.bias_v) / PULSE_FULL_V, 1.0)
    if action.kind == "dip":
        return min(abs(action.dip_nm) / DIP_FULL_NM, 1.0)
    return 0.0


def outcome_probabilities(action: Action, tip: Tip) -> dict[str, float]:
    """Probability of each of `OUTCOMES` for `action` on `tip` (they sum to 1).

    See the module docstring for the table these numbers come from.
    """
    p = dict.fromkeys(OUTCOMES, 0.0)
    if action.kind == "stall" or tip.crashed or not tip.in_contact:
        p["none"] = 1.0
        return p
    s = strength(action)
    dirty = bool({"contaminated", "unstable"} & set(tip.defects))
    if action.kind == "pulse":
        p["reform"] = (0.04 + 0.31 * s * s) * (0.5 if "blunt" in tip.defects else 1.0)
        p["clean"] = (0.10 + 0.30 * s) if dirty else 0.0
        p["perturb"] = 0.20
        p["no_contact"] = 0.04 * s * s
    else:
        p["reform"] = 0.10 + 0.80 * s
        p["clean"] = 0.20 * (1 - s) if dirty else 0.0
        p["perturb"] = 0.40 * (1 - s)
        p["crash"] = 0.005 + 0.045 * s * s
    p["none"] = 1.0 - sum(p.values())
    return p


def good_after_reform(action: Action) -> float:
    """Probability that a re-formed apex comes out good."""
    return 0.20 + 0.20 * strength(action) if action.kind == "dip" else 0.25


def reformed_tip(rng: np.random.Generator, p_good: float) -> Tip:
    """A freshly formed apex: good with probability `p_good`, else a random bad state."""
    if rng.random() < p_good:
        return random_tip(rng, "good")
    weights = np.array([REFORMED_BAD_WEIGHTS[s] for s in BAD_STATES])
    return random_tip(rng, str(rng.choice(BAD_STATES, p=weights / weights.sum())))


def apply_action(tip: Tip, action: Action, rng: np.random.Generator) -> tuple[Tip, str]:
    """Draw an outcome for `action` on `tip`; return the new tip and the outcome's name."""
    p = outcome_probabilities(action, tip)
    outcome = str(rng.choice(OUTCOMES, p=[p[o] for o in OUTCOMES]))
    if outcome == "perturb":
        return perturbed(tip, rng, 0.3 + 0.7 * strength(action)), outcome
    if outcome == "clean":
        return cleaned(tip, rng), outcome
    if outcome == "reform":
        return reformed_tip(rng, good_after_reform(action)), outcome
    if outcome == "crash":
        return tip.evolve(crashed=True), outcome
    if outcome == "no_contact":
        return tip.evolve(in_contact=False), outcome
    return tip, outcome
