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
SEED = 13  # an area with step edges
# float32 scans sit near the z piezo's working extension (~0.3 um), where one float32 step is
# ~3e-14 m: a change below that is rounding, anything above it a change of the physics
FLOAT32_STEP_M = 6e-14

DEFAULT_SHA256 = "1ca69a89a8a9cfca3fbb5c8a170c51c224ed2c458959b1befee89865fcb1a9ae"
FAMILY_FINGERPRINTS = {  # `fingerprint(pinned_images(family))` before the speed-ups
    "ag100_mgpc": [
        2.967271636664e-07, 6.300836420749e-11, -2.995833474457e-11, -1.301579451095e-10,
        2.918137217839e-07, 1.123095449259e-10, -5.050721906307e-11, -1.477221050158e-10,
        2.850828523734e-07, 7.34774426101e-11, 2.705217223069e-11, -6.58699040579e-11,
        2.869036520373e-07, 1.156899972607e-10, 5.563992552618e-11, -9.976997000705e-11,
        2.977893436285e-07, 1.208733525213e-10, -3.925411574966e-11, -1.682440478073e-10,
        2.87145391584e-07, 1.388801607122e-10, -3.001005196051e-11, 1.857359526717e-10,
        2.818833233845e-07, 4.324058653382e-10, 4.490245225653e-10, 4.346383268737e-12,
        2.817440317993e-07, 1.155151661609e-10, 4.342389659732e-11, 2.553090456827e-11,
        2.990823423782e-07, 4.014224160422e-10, 1.855202570751e-10, 7.992963024768e-11],
    "au111": [
        2.931149376204e-07, 1.611025126035e-11, 7.126793101015e-12, 1.694118180795e-11,
        2.886903186089e-07, 1.242995588231e-10, 3.266759388368e-11, -2.566708920908e-10,
        2.89451623274e-07, 3.554989473257e-11, 2.091430006588e-12, -1.379177009535e-11,
        2.857091397912e-07, 9.462342241229e-11, 1.051365560173e-10, 1.273447233389e-11,
        2.936763219066e-07, 1.202790771317e-10, 8.502861504882e-11, 6.010829756878e-11,
        2.894280485052e-07, 1.329657162868e-10, -1.208021205306e-11, 2.403172153426e-10,
        2.861209428204e-07, 4.189964536177e-10, 4.369395373632e-10, 4.162752636492e-11,
        2.868653833366e-07, 9.168696889465e-11, -7.640767904956e-12, 4.225779597806e-11,
        2.942645366752e-07, 1.388181547054e-10, 2.264258001696e-10, 1.195099881398e-10],
    "si111_7x7": [
        2.814503871906e-07, 8.062535367423e-11, -2.034305010114e-11, -2.513497856768e-11,
        2.868961833449e-07, 2.104384205154e-10, -1.615373887445e-10, -2.372943005701e-10,
        2.901205084296e-07, 8.473840706486e-11, -7.013026876148e-11, -4.791966455497e-11,
        2.910734280687e-07, 9.733635821033e-11, 1.353522115382e-11, 8.954397061278e-12,
        2.794101027839e-07, 1.801201819614e-10, -1.054592587985e-10, -2.18347889924e-12,
        2.883771839744e-07, 1.742563100662e-10, -2.758823263087e-11, -4.84816250417e-11,
        2.940479836497e-07, 4.331911509063e-10, 4.009298085721e-10, 3.046686506387e-11,
        2.891061659377e-07, 1.517546623094e-10, -1.583543242973e-10, -6.364925692064e-13,
        2.860977976957e-07, 1.492998848497e-10, 3.860414671532e-11, 5.649925094691e-11],
    "h_si100": [
        2.949660915241e-07, 5.414223164532e-11, 7.02628633502e-11, -1.93684475794e-11,
        2.908749657179e-07, 8.147282826603e-11, -6.165102899421e-11, -1.007178109751e-10,
        2.866620254713e-07, 5.443806372569e-11, 1.831977252654e-11, -7.155504284066e-11,
        2.869836500316e-07, 9.900706679591e-11, -1.437615196153e-11, -1.064781450923e-10,
        2.957538995305e-07, 1.036259773236e-10, 1.681283564915e-11, -1.749080104042e-10,
        2.880482291578e-07, 1.232128981589e-10, -1.778638492227e-10, -7.883094657622e-11,
        2.837823237928e-07, 4.33208165998e-10, 3.86002396072e-10, 2.894857644382e-11,
        2.87533310793e-07, 1.295915039808e-10, 1.66559813034e-10, 4.021572951097e-11,
        2.984318874383e-07, 1.217684600613e-10, 9.333132871853e-11, -3.149617519594e-11],
    "graphite": [
        2.859504341438e-07, 1.737134324642e-11, -4.0212907388e-12, 2.336566851344e-11,
        2.832984448767e-07, 6.743174119068e-11, 1.551131038628e-11, 3.973909838629e-11,
        2.973143840776e-07, 9.292315900757e-11, -4.816174717486e-11, 6.00902173877e-11,
        2.84295504055e-07, 1.070107025789e-10, 7.189250049804e-11, -3.412439515696e-11,
        2.857084442434e-07, 1.136177641759e-10, 6.406022653107e-11, -4.26982893407e-11,
        2.934943296538e-07, 1.431678102271e-10, 5.468050994217e-11, 2.478729261756e-10,
        2.943320332946e-07, 4.263526941908e-10, 4.698215887255e-10, 1.886633230128e-10,
        2.822546998488e-07, 2.01975537997e-10, 2.9083231834e-10, 2.684184567524e-10],
    "molecular_islands": [
        2.896185213042e-07, 8.348990491025e-11, -6.253746454612e-13, 5.119079312567e-11,
        2.80216594796e-07, 2.673484444451e-10, 2.251340413602e-10, 5.65565904976e-10,
        3.023588412282e-07, 9.570195226711e-11, 8.150102470533e-11, 1.976667180837e-10,
        2.786037812744e-07, 1.371520786178e-10, 1.427794047775e-10, 1.563792137203e-10,
        2.905295408348e-07, 3.345759027176e-10, 3.453351896101e-10, 7.608041930355e-10,
        2.969547856935e-07, 3.631282739853e-10, 6.318485093115e-10, 4.423425271338e-10,
        2.940026597315e-07, 4.22230455516e-10, 5.098303398173e-10, 2.511969267306e-10,
        3.033596214716e-07, 1.580610410691e-10, 1.845838681985e-11, 3.978686747802e-10,
        2.776504675062e-07, 2.437466516988e-10, 4.248648117645e-10, 5.126060653539e-10],
    "step_bunches": [
        2.945303834156e-07, 9.880300211845e-11, -1.060451157545e-10, -2.647482138784e-10,
        3.037585465243e-07, 6.198082589898e-10, -4.363618039298e-10, -1.182174196507e-09,
        2.648248649123e-07, 2.978362320671e-10, -1.021826723952e-10, -5.555703920231e-10,
        3.024206972138e-07, 9.837331452599e-11, -2.468267912072e-12, -1.738542191549e-10,
        2.927575670705e-07, 3.446184166097e-10, -1.963443131577e-10, -6.665308865542e-10,
        2.747675079372e-07, 3.232192643753e-10, -5.450885208922e-10, -2.769436169749e-10,
        2.752697651279e-07, 4.796405115786e-10, 3.534159004345e-10, -2.74962741944e-10,
        3.129798258478e-07, 4.739895771443e-10, -2.648902379663e-10, -8.836524690713e-10,
        2.918259801102e-07, 5.307884783183e-10, -4.145948093372e-10, -1.009879247991e-09],
    "clusters": [
        2.788706973955e-07, 2.954725718482e-10, -1.974273396814e-10, -2.9058955972e-10,
        2.886942745764e-07, 3.765653136175e-10, -2.321699727434e-10, -2.051615258939e-10,
        2.865822611303e-07, 1.197762473074e-10, -2.397716999954e-10, -1.110167110078e-10,
        2.952586606944e-07, 2.292902520235e-10, -2.265669643941e-10, -2.646146629956e-10,
        2.754843536484e-07, 3.895313964313e-10, -1.328955005502e-10, -3.01098489082e-10,
        2.860373897514e-07, 2.888074962123e-10, 9.505194388053e-12, -2.350838264322e-10,
        2.95003414523e-07, 4.599023207459e-10, 3.806559002142e-10, 4.895814831173e-10,
        3.029366449983e-07, 2.711019888677e-10, -2.155245336559e-10, -3.587451418272e-10],
}


def pinned_images(family: str | None) -> list[np.ndarray]:
    """Scans of one seeded area by every imaging tip state at the family's smallest,
    largest and a 10 nm frame, one at negative bias and 128 px, one after a dip, then one
    across a step edge and one over a cluster (where the area has them)."""
    from deepspm_bluesky.actions import load_actions

    microscope = SimulatedMicroscope(seed=SEED, family=family)
    sample = microscope.sample
    sizes_nm = (*FRAME_NM[family or "ag100_mgpc"], 10.0)
    places = np.random.default_rng(SEED).uniform(-3e-7, 3e-7, (len(IMAGING_STATES) + 2, 2))
    images = []
    for i, state in enumerate(IMAGING_STATES):
        microscope.tip = random_tip(np.random.default_rng([SEED, i]), state)
        images.append(microscope.scan(*places[i], sizes_nm[i % 3] * 1e-9, 64))
    microscope.set_bias(-1.5)
    images.append(microscope.scan(*places[-2], sizes_nm[1] * 1e-9, 128))
    microscope.tip = random_tip(np.random.default_rng([SEED, 9]), "double")
    microscope.condition(load_actions().get("dip -2.5 nm"), *places[-1])
    images.append(microscope.scan(*places[-1], 10e-9, 64))
    edges = sample.steps.normals * sample.steps.offsets_m[:, None]
    for centre in (*edges[:1], *sample.debris.xy[:1]):
        images.append(microscope.scan(*np.clip(centre, -4e-7, 4e-7), 20e-9, 64))
    return images


def fingerprint(images: list[np.ndarray]) -> list[float]:
    """Per image: mean, standard deviation and two fixed random projections (unit vectors)
    of the image minus its mean. A pixel off by one float32 step moves a projection by
    about 1/64 of a step; moving Au(111)'s ridges by 6 pm moves one by 0.8 steps."""
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
                               atol=0.1 * FLOAT32_STEP_M)
