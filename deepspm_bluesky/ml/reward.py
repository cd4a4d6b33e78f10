"""The conditioning reward: DeepSPM's -1 per action and +10 for a good tip, counted in time.

DeepSPM gives -1 per action and +10 when the classifier says the tip is good (the episode
ends there). Here an action costs the instrument time it took divided by `STEP_TIME_S`, the
time of a plain action (a 200 ms pulse and the 64 x 64 px rescan of a 10 nm frame at
80 nm/s). A plain action so still costs -1, while a lost contact (re-approach and waiting
for creep, 120 s) or a crash (heavy tip clean, `TIP_CLEAN_S`) costs what it really costs.
"""

from __future__ import annotations

SCAN_TIME_S = 2 * 64 * 10e-9 / 80e-9  # 64 lines forth and back over 10 nm at 80 nm/s: 16 s
STEP_TIME_S = SCAN_TIME_S + 0.2  # ... plus a 200 ms action: one "action" of time
SUCCESS_REWARD = 10.0
TIP_CLEAN_S = 300.0  # a heavy tip clean and re-approach after a crash (assumed: minutes)


def conditioning_reward(elapsed_s: float, *, good: bool) -> float:
    """Reward of one conditioning step.

    Parameters
    ----------
    elapsed_s
        Instrument time from the action to the image it is judged on, recoveries included.
    good
        Whether that image shows a good tip (the episode ends).

    Returns
    -------
    float
        ``-elapsed_s / STEP_TIME_S``, plus `SUCCESS_REWARD` if `good`.

    Examples
    --------
    >>> round(conditioning_reward(STEP_TIME_S, good=False), 6)
    -1.0
    """
    if not elapsed_s >= 0:
        raise ValueError(f"elapsed time must be >= 0 s, got {elapsed_s}")
    return -elapsed_s / STEP_TIME_S + (SUCCESS_REWARD if good else 0.0)
