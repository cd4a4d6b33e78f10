"""What a conditioning action does to the tip: a state-dependent model with its reasons.

An action either triggers one of three *events* that ignore what was wrong with the tip, or,
if none happens, *repairs* each defect the tip has with a probability that depends on the
defect and the action. Where nothing is repaired it may *perturb* the tip a little.

Events (exclusive, drawn first; ``V = |bias_v|``, ``d = |dip_nm|``, ``s`` = `strength`)
----------------------------------------------------------------------------------------
=========== ============================================ =====================================
event       pulse                                        dip
=========== ============================================ =====================================
reform      0.02 + 0.30 s^2, halved for a blunt tip      clip((d - 0.5) / 4, 0, 0.9)
crash       0                                            0.005 + 0.06 s^2
no_contact  0.04 s^2                                     0
=========== ============================================ =====================================

A re-formed apex is a new tip, good with probability `good_after_reform` (pulse 0.25; dip
0.35, falling by 0.05 per nm beyond 3 nm: a deep indentation wraps the apex in a blob of
sample metal), else double, blunt, unstable or contaminated (`REFORMED_BAD_WEIGHTS`).

Repairs (`repair_probabilities`; each defect independently; field ``f = min(V / 4 V, 1)``)
----------------------------------------------------------------------------------------
============= ================ ========================================= ====================
defect        pulse            dip                                       repair (`sim.tip`)
============= ================ ========================================= ====================
contaminated  0.70 f           0.15                                      `desorbed`
unstable      0.60 f           0.25                                      `stabilized`
double        0.10 s           0.60 min(1, (1.2 nm / d)^2)               `sharpened`
blunt         0                0.50 clip((d - 1 nm) / 0.8 nm, 0, 1)      `reshaped`
============= ================ ========================================= ====================

Perturb: 0.15 after a pulse, 0.30 (1 - s) after a dip that repaired nothing (`tip.perturbed`
with strength 0.3 + 0.7 s: it may add a defect). Stalls, and anything done to a crashed or
retracted tip, do nothing.

For a tip with one defect and the DeepSPM table this gives P(good after one action) of
about 0.65 for a contaminated tip pulsed at 4 V (0.17 for a 1 nm dip), 0.56 for an unstable
tip pulsed at 4 V, 0.58 for a double tip dipped by 0.8 nm (0.07 for a 4 V pulse), and 0.45
for a blunt tip dipped by 1.8 nm (0.01 for a 4 V pulse). No single action is good for every
state (the best, a 1.8 or 2.5 nm dip, reaches 0.2-0.45), so reading the tip from the image
pays, which is what the DeepSPM agent learned on a real instrument.

Reasons
-------
- Voltage pulses desorb adsorbates from the apex and let a loosely bound apex atom settle
  or leave by field-induced diffusion/evaporation; this needs a field threshold that a few
  volts at tunnelling distance reach, hence the saturation at 4 V [1]_, [2]_. A pulse
  rarely removes the *right* one of two protrusions and does not make a wide apex narrow.
- A gentle dip (a controlled contact of a few Angstrom to 1 nm) re-shapes the very end of
  the apex and usually leaves one atom in front: the standard cure for a double tip [3]_,
  [4]_. Deeper dips mostly re-form the apex, with a random result.
- A blunt apex needs an indentation deeper than its radius (0.5-1.2 nm here) to pull a
  fresh nanotip out of the sample metal [4]_, [5]_.
- Deep dips cost time and sample: they leave craters and rims (debris in the next frames,
  see `SimulatedMicroscope.condition`), need a larger free area (action table) and risk a
  crash whose heavy tip clean takes minutes; a crash is modelled as the tip stuck in the
  sample, recovered only by `tip_clean`.

Uncertainty
-----------
The ranking of actions per state follows the practice cited above; the numbers do not come
from a measurement. They are chosen so that per-state optima are near 0.5 per action and
stated to within about a factor of two: on a real instrument the rates depend on the tip
material, the sample and the history, which is why the agent keeps learning live. Tests pin
the numbers as documented (`tests/test_sim_conditioning.py`); change both together.

References
----------
.. [1] C. J. Chen, *Introduction to Scanning Tunneling Microscopy*, 2nd ed. (Oxford
   University Press, 2008), ch. 15 (tip treatment by field evaporation and pulses).
.. [2] A. Krull, P. Hirsch, C. Rother, A. Schiffrin, C. Krull, "Artificial-intelligence-
   driven scanning probe microscopy", Commun. Phys. 3, 54 (2020),
   doi:10.1038/s42005-020-0317-3 (the action table; the agent learned state-specific use).
.. [3] M. Rashidi, R. A. Wolkow, "Autonomous scanning probe microscopy in situ tip
   conditioning through machine learning", ACS Nano 12, 5185 (2018),
   doi:10.1021/acsnano.8b02208 (gentle controlled contacts to cure double tips).
.. [4] S. Wang et al., "Automated tip conditioning for scanning tunneling spectroscopy",
   J. Phys. Chem. A 125, 1384 (2021), doi:10.1021/acs.jpca.0c10731 (indentation depth
   chosen by the state of the tip).
.. [5] Chen (2008), ch. 15: controlled collisions coat the apex with sample metal.
"""

from __future__ import annotations

import math

import numpy as np

from ..actions import Action
from .tip import BAD_STATES, REPAIRS, Tip, perturbed, random_tip

OUTCOMES = ("none", "perturb", "repair", "reform", "crash", "no_contact")
EVENTS = ("reform", "crash", "no_contact")
PULSE_FULL_V = 8.0
DIP_FULL_NM = 5.0
PULSE_FIELD_V = 4.0  # pulses desorb and settle at full rate from this bias on
REFORMED_BAD_WEIGHTS = {"double": 0.35, "blunt": 0.25, "unstable": 0.2, "contaminated": 0.2}


def strength(action: Action) -> float:
    """Action strength in [0, 1]: |bias| / 8 V for pulses, |dip| / 5 nm for dips, 0 else."""
    if action.kind == "pulse":
        return min(abs(action.bias_v) / PULSE_FULL_V, 1.0)
    if action.kind == "dip":
        return min(abs(action.dip_nm) / DIP_FULL_NM, 1.0)
    return 0.0


def _acts_on(action: Action, tip: Tip) -> bool:
    """False for stalls and for a tip that is not tunnelling: then nothing happens."""
    return action.kind != "stall" and not tip.crashed and tip.in_contact


def event_probabilities(action: Action, tip: Tip) -> dict[str, float]:
    """Probability of each of `EVENTS` (reform, crash, no_contact) for `action` on `tip`."""
    p = dict.fromkeys(EVENTS, 0.0)
    if not _acts_on(action, tip):
        return p
    s = strength(action)
    if action.kind == "pulse":
        p["reform"] = (0.02 + 0.30 * s * s) * (0.5 if "blunt" in tip.defects else 1.0)
        p["no_contact"] = 0.04 * s * s
    else:
        depth_nm = DIP_FULL_NM * s
        p["reform"] = float(np.clip((depth_nm - 0.5) / 4.0, 0.0, 0.9))
        p["crash"] = 0.005 + 0.06 * s * s
    return p


def repair_probabilities(action: Action, tip: Tip) -> dict[str, float]:
    """Probability that `action` removes each bad defect of `tip`, when no event happens.

    Returns
    -------
    dict
        ``{defect: probability}`` for the defects of `tip` among `BAD_STATES` (empty for a
        good, crashed or retracted tip, and for a stall).
    """
    if not _acts_on(action, tip):
        return {}
    s = strength(action)
    if action.kind == "pulse":
        field = min(abs(action.bias_v) / PULSE_FIELD_V, 1.0)
        rates = {"contaminated": 0.80 * field, "unstable": 0.75 * field,
                 "double": 0.05 * s, "blunt": 0.0}
    else:
        depth_nm = max(DIP_FULL_NM * s, 1e-9)
        rates = {"contaminated": 0.08, "unstable": 0.15,
                 "double": 0.75 * min(1.0, (1.2 / depth_nm) ** 2),
                 "blunt": 0.65 * float(np.clip((depth_nm - 1.0) / 0.8, 0.0, 1.0))}
    return {d: rates[d] for d in tip.defects if d in BAD_STATES}


def perturb_probability(action: Action, tip: Tip) -> float:
    """Probability of a small random change when no event happened and nothing was repaired."""
    if not _acts_on(action, tip):
        return 0.0
    return 0.15 if action.kind == "pulse" else 0.30 * (1 - strength(action))


def outcome_probabilities(action: Action, tip: Tip) -> dict[str, float]:
    """Probability of each of `OUTCOMES` for `action` on `tip` (they sum to 1).

    "repair" means at least one defect was removed; see the module docstring.
    """
    p = dict.fromkeys(OUTCOMES, 0.0)
    p.update(event_probabilities(action, tip))
    rest = 1.0 - sum(p.values())
    nothing_repaired = math.prod(1.0 - r for r in repair_probabilities(action, tip).values())
    p["repair"] = rest * (1.0 - nothing_repaired)
    p["perturb"] = rest * nothing_repaired * perturb_probability(action, tip)
    p["none"] = max(1.0 - sum(p.values()), 0.0)
    return p


def good_after_reform(action: Action) -> float:
    """Probability that a re-formed apex comes out good (see the module docstring)."""
    if action.kind != "dip":
        return 0.25
    return 0.35 - 0.05 * max(DIP_FULL_NM * strength(action) - 3.0, 0.0)


def reformed_tip(rng: np.random.Generator, p_good: float) -> Tip:
    """A freshly formed apex: good with probability `p_good`, else a random bad state."""
    if rng.random() < p_good:
        return random_tip(rng, "good")
    weights = np.array([REFORMED_BAD_WEIGHTS[s] for s in BAD_STATES])
    return random_tip(rng, str(rng.choice(BAD_STATES, p=weights / weights.sum())))


def apply_action(tip: Tip, action: Action, rng: np.random.Generator) -> tuple[Tip, str]:
    """Draw what `action` does to `tip`; return the new tip and the outcome's name.

    The outcome is one of `OUTCOMES`, drawn with `outcome_probabilities`.
    """
    if not _acts_on(action, tip):
        return tip, "none"
    events = event_probabilities(action, tip)
    u = rng.random()
    for event in EVENTS:
        if u < events[event]:
            break
        u -= events[event]
    else:
        event = None
    if event == "reform":
        return reformed_tip(rng, good_after_reform(action)), "reform"
    if event == "crash":
        return tip.evolve(crashed=True), "crash"
    if event == "no_contact":
        return tip.evolve(in_contact=False), "no_contact"
    repaired = False
    for defect, rate in repair_probabilities(action, tip).items():
        if rng.random() < rate:
            tip, repaired = REPAIRS[defect](tip, rng), True
    if repaired:
        return tip, "repair"
    if rng.random() < perturb_probability(action, tip):
        return perturbed(tip, rng, 0.3 + 0.7 * strength(action)), "perturb"
    return tip, "none"
