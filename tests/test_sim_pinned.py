"""Images pinned from the simulator as it was before its speed-ups (issue 12): the default
sample bit for bit (the shipped classifier and agent were trained on it), every surface
family to within float32 rounding (same seeds, same images)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from deepspm_bluesky.sim import SimulatedMicroscope, random_tip
from deepspm_bluesky.sim.families import FAMILIES, FRAME_NM

IMAGING_STATES = ("good", "double", "blunt", "unstable", "contaminated")
SEED = 11
# float32 scans sit near the z piezo's working extension (~0.3 um), where one float32 step is
# ~3e-14 m: a change below that is rounding, anything above it a change of the physics
FLOAT32_STEP_M = 6e-14

DEFAULT_SHA256 = "943b2e35b2c38f8517a8dd2df4a08106bc4015f5dd5c8b3a2a8e2450a2c65373"
FAMILY_FINGERPRINTS = {  # `fingerprint(pinned_images(family))` before the speed-ups
    "ag100_mgpc": [
        2.879971695e-07, 2.237675295e-11, 1.71669316e-11, -1.705236833e-11, 2.80411919e-07,
        3.841024465e-11, 4.407570702e-11, 9.176639986e-11, 2.935594208e-07, 3.897680436e-11,
        5.975932556e-11, 6.066990254e-11, 2.822743705e-07, 8.947853379e-11, 1.363650729e-10,
        -8.84194269e-12, 2.880061641e-07, 9.34753656e-11, 1.232679401e-10, 1.336194073e-10,
        2.870859999e-07, 9.54139707e-11, 1.053891597e-10, 1.600263379e-10, 2.836594038e-07,
        5.571335182e-10, 5.767948437e-10, 3.508383565e-10],
    "au111": [
        2.8587136e-07, 1.910494124e-11, -6.77406001e-12, -3.706475193e-11, 2.837538609e-07,
        8.013114441e-11, -8.478097204e-11, -1.391642536e-10, 2.889127334e-07, 4.007073781e-11,
        4.010364093e-11, 1.155391829e-11, 2.817714843e-07, 7.688589618e-11, 1.059752279e-10,
        -2.532964452e-11, 2.899303585e-07, 1.26147992e-10, 1.383317591e-10, 1.114567826e-10,
        2.863714429e-07, 1.397297669e-10, 4.907115515e-11, 2.257917667e-10, 2.859740405e-07,
        5.518348059e-10, 5.106617172e-10, 1.874016432e-10],
    "si111_7x7": [
        2.927389877e-07, 5.47416096e-11, -4.840603693e-11, 6.530935869e-11, 2.811416971e-07,
        1.419026626e-10, 1.620494756e-11, 1.675711481e-10, 2.964075761e-07, 7.245545363e-11,
        6.496384479e-11, 1.187474254e-10, 2.891367831e-07, 9.31139933e-11, 1.30791968e-10,
        4.946714932e-11, 2.818767492e-07, 1.602898032e-10, 1.42439025e-10, 2.897962221e-10,
        2.888875002e-07, 1.756247619e-10, 2.451961956e-10, 2.345114513e-10, 2.826213401e-07,
        5.65613965e-10, 5.528288615e-10, 3.355033741e-10],
    "h_si100": [
        2.936757131e-07, 4.303941869e-11, 2.633718136e-11, 1.004916785e-11, 2.829917418e-07,
        1.076644339e-10, -3.847391582e-11, -3.137111955e-11, 2.955136669e-07, 7.538514956e-11,
        5.533510216e-11, 3.189233685e-11, 2.916996592e-07, 8.140759714e-11, 6.489658199e-11,
        -1.986402558e-11, 2.805806932e-07, 1.109384263e-10, 1.003709304e-10, 3.669360945e-11,
        2.890858297e-07, 1.039371099e-10, 1.496670485e-10, 1.722001762e-11, 2.832219685e-07,
        5.690342424e-10, 5.02718379e-10, 3.304892669e-10],
    "graphite": [
        2.844859143e-07, 6.0956007e-11, -3.02082792e-11, -8.106204759e-11, 2.880135969e-07,
        1.400379457e-10, -1.638373544e-10, -7.234117812e-11, 2.848350174e-07, 9.818056432e-11,
        -2.833628942e-11, -1.710624533e-10, 2.830001049e-07, 7.506346016e-11, 7.289448307e-11,
        -7.863337826e-11, 2.912737754e-07, 9.874746863e-11, -5.358490272e-11, -2.20517371e-10,
        2.858748295e-07, 8.385784161e-11, -6.633658459e-11, 9.609040807e-11, 2.884852914e-07,
        5.493901779e-10, 3.354243366e-10, 1.581107587e-10],
    "molecular_islands": [
        2.86256599e-07, 1.950530813e-11, 5.068360332e-12, -3.234082175e-11, 2.797728942e-07,
        1.123235018e-10, 9.311229604e-11, 1.559610284e-10, 2.925097756e-07, 7.893013377e-11,
        9.417273008e-11, 6.046422314e-11, 2.795408802e-07, 9.906723379e-11, 1.498176877e-10,
        3.146721523e-11, 2.904201325e-07, 2.289902791e-10, 2.494963269e-10, 2.998591575e-10,
        2.864393243e-07, 2.414569078e-10, 1.515582384e-10, 4.121200175e-10, 2.840202012e-07,
        5.503328961e-10, 5.575578403e-10, 2.904297383e-10],
    "step_bunches": [
        2.946175705e-07, 2.175597764e-10, 2.768657858e-11, 2.212511765e-10, 2.800547889e-07,
        9.281800008e-11, 1.638725811e-11, 8.66468728e-11, 2.984826375e-07, 8.64154171e-11,
        3.592293973e-11, 6.617301999e-11, 2.910999683e-07, 1.16583746e-10, 1.102195187e-10,
        7.293477738e-11, 2.803254401e-07, 1.811350054e-10, 1.478333852e-10, 2.694472395e-10,
        2.894556009e-07, 1.203042977e-10, 6.055249494e-11, 1.066455015e-10, 2.814705451e-07,
        5.526220383e-10, 5.256533741e-10, 3.078365528e-10],
    "clusters": [
        2.824149863e-07, 7.968630466e-11, -7.183439244e-11, -1.805212891e-10, 2.872490628e-07,
        2.049995346e-10, -3.627737773e-11, -2.945236386e-10, 2.832532441e-07, 1.142738119e-10,
        -5.911243349e-11, -1.489083051e-10, 2.79736879e-07, 1.314938915e-10, 2.613209924e-10,
        -1.954455345e-10, 2.934282055e-07, 2.390370296e-10, -1.069179982e-10, -2.219410488e-10,
        2.848462553e-07, 2.433629242e-10, -4.79259249e-11, 1.547354328e-10, 2.886737529e-07,
        5.506420633e-10, 4.457359233e-10, 1.609961895e-10],
}


def pinned_images(family: str | None) -> list[np.ndarray]:
    """Scans of one seeded area by every imaging tip state at the family's smallest,
    largest and a 10 nm frame, then one at negative bias and 128 px, and one after a dip."""
    from deepspm_bluesky.actions import load_actions

    microscope = SimulatedMicroscope(seed=SEED, family=family)
    sizes_nm = (*FRAME_NM[family or "ag100_mgpc"], 10.0)
    places = np.random.default_rng(SEED).uniform(-3e-7, 3e-7, (len(IMAGING_STATES) + 2, 2))
    images = []
    for i, state in enumerate(IMAGING_STATES):
        microscope.tip = random_tip(np.random.default_rng([SEED, i]), state)
        images.append(microscope.scan(*places[i], sizes_nm[i % 3] * 1e-9, 64))
    microscope.set_bias(-1.5)
    images.append(microscope.scan(*places[-2], sizes_nm[1] * 1e-9, 128))
    microscope.tip = random_tip(np.random.default_rng([SEED, 9]), "good")
    microscope.condition(load_actions().get("dip -2.5 nm"), *places[-1])
    images.append(microscope.scan(*places[-1], 10e-9, 64))
    return images


def fingerprint(images: list[np.ndarray]) -> list[float]:
    """Per image: mean, standard deviation and two fixed random projections (unit vectors)
    of the image minus its mean; a few pixels off by one float32 step move each by less
    than a step, a change of the physics by far more."""
    out = []
    for image in images:
        flat = image.astype(float).ravel()
        weights = np.random.default_rng(flat.size).standard_normal((2, flat.size))
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)
        centred = flat - flat.mean()
        out += [flat.mean(), centred.std(), *(weights @ centred)]
    return out


def test_the_default_sample_images_bit_for_bit_as_before():
    digest = hashlib.sha256(b"".join(im.tobytes() for im in pinned_images(None)))
    assert digest.hexdigest() == DEFAULT_SHA256


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_images_as_before_to_float32_rounding(family):
    got = np.array(fingerprint(pinned_images(family)))
    np.testing.assert_allclose(got, FAMILY_FINGERPRINTS[family], rtol=0,
                               atol=4 * FLOAT32_STEP_M)
