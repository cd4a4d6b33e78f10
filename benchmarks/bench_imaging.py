"""Per-image pipeline: ours (`deepspm_bluesky.imaging`) against DeepSPM's, same images, one run.

Run with ``python -m benchmarks bench_imaging``. The reference (`reference_pipeline`) is
DeepSPM's algorithm re-implemented faithfully: RANSAC plane (4-point samples, 5 pm residual
threshold, at most 1000 trials) and the pixel-loop square search. It is timed twice: with
scikit-learn's early stop (stop probability 0.99, what DeepSPM's code ran) and with all 1000
trials (the cost the issue states). Every figure is measured here; none is hard-coded.
"""

from __future__ import annotations

import numpy as np

from deepspm_bluesky import imaging
from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.sim import SimulatedMicroscope

from . import reference_pipeline as reference
from .timing import per_call_s, report

FRAME_M = 10e-9
FRAME_NM = 10.0
Z_RANGE_M = 1e-6
IMAGES = {64: 12, 256: 2}  # images per size: the reference takes seconds at 256 px
GOAL_RATIO = 100.0
GOAL_64_PX_S = 1e-3


def sim_images(pixels: int, count: int) -> list[np.ndarray]:
    """Simulated scans in different areas that pass the reference's checks (so that the
    reference runs its whole pipeline on them)."""
    images, seed = [], 0
    while len(images) < count and seed < 20 * count:
        rng = np.random.default_rng(seed)
        x, y = rng.uniform(-300e-9, 300e-9, 2)
        image = SimulatedMicroscope(seed=seed).scan(x, y, FRAME_M, pixels).astype(np.float64)
        if reference.pipeline(image, z_range_m=Z_RANGE_M, size_nm=FRAME_NM,
                              require_free_nm=[0.0])["verdict"] == "ok":
            images.append(image)
        seed += 1
    if len(images) < count:
        raise RuntimeError(f"only {len(images)} of {count} simulated {pixels}-px images pass "
                           "the reference checks")
    return images


def ours(image: np.ndarray, actions) -> imaging.ProcessedImage:
    return imaging.process_image(image, size_nm=FRAME_NM, z_range_m=Z_RANGE_M, actions=actions,
                                 border_px=1)


def theirs(image: np.ndarray, need: list[float], stop_probability: float) -> dict:
    return reference.pipeline(image, z_range_m=Z_RANGE_M, size_nm=FRAME_NM,
                              require_free_nm=need, stop_probability=stop_probability)


def per_image_s(fn, images: list[np.ndarray], *, repeat: int, warmup: int) -> float:
    """Best-of-three mean time of `fn` on one image, averaged over the images."""
    def one_pass():
        for image in images:
            fn(image)
    return per_call_s(one_pass, repeat=repeat, warmup=warmup) / len(images)


def timings(pixels: int, images: list[np.ndarray]) -> dict[str, float]:
    actions = load_actions()
    need = [a.require_free_nm for a in actions]
    small = pixels <= 64
    ours_s = per_image_s(lambda im: ours(im, actions), images, repeat=20 if small else 3,
                         warmup=2)
    early_s = per_image_s(lambda im: theirs(im, need, reference.STOP_PROBABILITY), images,
                          repeat=2 if small else 1, warmup=1 if small else 0)
    full_s = per_image_s(lambda im: theirs(im, need, 1.0), images, repeat=1, warmup=0)
    trials = np.mean([reference.ransac_plane(im)[1] for im in images])
    report(f"{pixels} px whole pipeline", ours_s, early_s,
           f"reference (RANSAC early stop, mean {trials:.0f} trials)")
    report(f"{pixels} px whole pipeline", ours_s, full_s, "reference (RANSAC 1000 trials)")
    return {"ours": ours_s, "early": early_s, "full": full_s}


def parts(images: list[np.ndarray]) -> None:
    """Where the time goes at 64 px: plane fit, and square search on the same mask."""
    image = images[0]
    normalized = imaging.normalize(imaging.flatten_plane(image))
    report("64 px plane fit", per_call_s(lambda: imaging.fit_plane(image), repeat=50),
           per_call_s(lambda: reference.ransac_plane(image), repeat=3, warmup=1),
           "RANSAC early stop")
    report("64 px free square", per_call_s(
        lambda: imaging.largest_free_square(normalized, border_px=1), repeat=50),
        per_call_s(lambda: reference.find_empty_spot(normalized), repeat=2, warmup=1),
        "pixel-loop DP")


def agreement(pixels: int, images: list[np.ndarray]) -> None:
    """How close our plane and free square come to RANSAC's, against RANSAC's own spread
    (the same reference with another random seed)."""
    actions = load_actions()
    need = [a.require_free_nm for a in actions]
    threshold = reference.RESIDUAL_THRESHOLD_M
    plane_pm = {"ours": [], "seed 1": []}
    consensus = {"ours": [], "seed 1": []}
    side_px = {"ours": [], "seed 1": []}
    allowed = {"ours": 0, "seed 1": 0}
    for image in images:
        ref = theirs(image, need, reference.STOP_PROBABILITY)
        mine = ours(image, actions)
        other_plane = reference.ransac_plane(image, seed=1)[0]
        other_side = reference.find_empty_spot(reference.normalize(image - other_plane))[2]
        other_allowed = [i for i, n in enumerate(need) if n <= other_side * FRAME_NM / pixels]
        ref_consensus = np.count_nonzero(np.abs(image - ref["plane"]) <= threshold)
        for key, plane, side, allow in (
                ("ours", image - mine.flattened, mine.square.size_px,
                 list(np.flatnonzero(mine.allowed))),
                ("seed 1", other_plane, other_side, other_allowed)):
            plane_pm[key].append(np.abs(plane - ref["plane"]).max() * 1e12)
            consensus[key].append(np.count_nonzero(np.abs(image - plane) <= threshold)
                                  - ref_consensus)
            side_px[key].append(abs(side - ref["side_px"]))
            allowed[key] += allow == ref["allowed"]
    n = len(images)
    for key in ("ours", "seed 1"):
        label = "ours       " if key == "ours" else "RANSAC seed 1"
        print(f"{pixels} px {label} vs RANSAC seed 0: plane max |diff| median "
              f"{np.median(plane_pm[key]):.2f} pm, max {np.max(plane_pm[key]):.2f} pm; "
              f"consensus (px within 5 pm) minus RANSAC's median {np.median(consensus[key]):+.0f}"
              f", min {np.min(consensus[key]):+d} of {images[0].size}; free side |diff| mean "
              f"{np.mean(side_px[key]):.1f} px; allowed actions equal {allowed[key]}/{n}")


def main() -> None:
    sets = {pixels: sim_images(pixels, count) for pixels, count in IMAGES.items()}
    print(f"images: {', '.join(f'{len(v)} simulated {k}-px' for k, v in sets.items())} "
          f"({FRAME_NM:g} nm frames, all 'ok' for the reference checks)")
    results = {pixels: timings(pixels, images) for pixels, images in sets.items()}
    parts(sets[64])
    for pixels, images in sets.items():
        agreement(pixels, images)
    worst_ratio = min(r["early"] / r["ours"] for r in results.values())
    worst_full = min(r["full"] / r["ours"] for r in results.values())
    print(f"goal >= {GOAL_RATIO:.0f}x: early-stop reference {worst_ratio:.0f}x (worst size), "
          f"1000-trial reference {worst_full:.0f}x -> "
          f"{'met' if worst_full >= GOAL_RATIO else 'NOT met'} against 1000 trials, "
          f"{'met' if worst_ratio >= GOAL_RATIO else 'NOT met'} against early stop")
    print(f"goal < {GOAL_64_PX_S * 1e3:.0f} ms per 64-px image: ours "
          f"{results[64]['ours'] * 1e3:.3f} ms -> "
          f"{'met' if results[64]['ours'] < GOAL_64_PX_S else 'NOT met'}")


if __name__ == "__main__":
    main()
