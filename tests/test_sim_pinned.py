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
        2.879971694528e-07, 2.237675294989e-11, 1.716693160486e-11, -1.705236833313e-11,
        2.804119190042e-07, 3.841024464723e-11, 4.407570701708e-11, 9.176639985923e-11,
        2.935594207859e-07, 3.897680436295e-11, 5.975932555982e-11, 6.066990253794e-11,
        2.822743704542e-07, 8.947853378821e-11, 1.363650728978e-10, -8.841942689616e-12,
        2.880061641328e-07, 9.347536560038e-11, 1.23267940091e-10, 1.336194072655e-10,
        2.870859998737e-07, 9.541397069948e-11, 1.053891596604e-10, 1.600263379335e-10,
        2.83659403813e-07, 5.57133518226e-10, 5.767948436736e-10, 3.508383564799e-10],
    "au111": [
        2.858713600493e-07, 1.910494123757e-11, -6.774060010206e-12, -3.706475192585e-11,
        2.837538609218e-07, 8.013114441061e-11, -8.478097203979e-11, -1.391642536101e-10,
        2.889127333899e-07, 4.0070737813e-11, 4.010364093065e-11, 1.155391829356e-11,
        2.817714842701e-07, 7.688589618291e-11, 1.059752279076e-10, -2.532964452256e-11,
        2.899303585269e-07, 1.261479919518e-10, 1.383317590687e-10, 1.114567826445e-10,
        2.863714428768e-07, 1.397297669058e-10, 4.907115515474e-11, 2.257917666742e-10,
        2.859740404759e-07, 5.518348059156e-10, 5.106617172103e-10, 1.874016431603e-10],
    "si111_7x7": [
        2.927389877172e-07, 5.474160959914e-11, -4.840603692633e-11, 6.530935869354e-11,
        2.811416970547e-07, 1.41902662561e-10, 1.620494756496e-11, 1.6757114806e-10,
        2.964075760808e-07, 7.245545363211e-11, 6.496384479235e-11, 1.187474253556e-10,
        2.891367830993e-07, 9.311399329579e-11, 1.307919680462e-10, 4.946714931601e-11,
        2.818767492335e-07, 1.602898032196e-10, 1.424390250327e-10, 2.897962220855e-10,
        2.888875001716e-07, 1.756247619477e-10, 2.45196195634e-10, 2.345114512572e-10,
        2.826213401155e-07, 5.6561396504e-10, 5.528288614611e-10, 3.355033740833e-10],
    "h_si100": [
        2.93675713095e-07, 4.303941869054e-11, 2.633718135888e-11, 1.004916785335e-11,
        2.829917417832e-07, 1.076644338868e-10, -3.847391581521e-11, -3.137111954632e-11,
        2.955136668981e-07, 7.538514956225e-11, 5.533510216298e-11, 3.189233684918e-11,
        2.916996592051e-07, 8.14075971423e-11, 6.489658198963e-11, -1.986402558095e-11,
        2.805806931655e-07, 1.109384263022e-10, 1.003709304353e-10, 3.669360944711e-11,
        2.890858297119e-07, 1.039371099452e-10, 1.49667048539e-10, 1.72200176209e-11,
        2.832219685306e-07, 5.69034242446e-10, 5.027183790233e-10, 3.304892669213e-10],
    "graphite": [
        2.844859142703e-07, 6.095600699914e-11, -3.020827920226e-11, -8.10620475861e-11,
        2.880135969233e-07, 1.40037945714e-10, -1.638373543544e-10, -7.234117812379e-11,
        2.848350174126e-07, 9.818056432476e-11, -2.833628941713e-11, -1.710624532628e-10,
        2.830001049267e-07, 7.506346016187e-11, 7.289448306527e-11, -7.863337825712e-11,
        2.91273775356e-07, 9.874746862668e-11, -5.358490272153e-11, -2.205173710394e-10,
        2.858748295309e-07, 8.385784160703e-11, -6.633658459335e-11, 9.609040806909e-11,
        2.884852913776e-07, 5.493901779361e-10, 3.354243365851e-10, 1.581107586946e-10],
    "molecular_islands": [
        2.86256599015e-07, 1.950530813479e-11, 5.068360332495e-12, -3.23408217485e-11,
        2.797728941781e-07, 1.123235018329e-10, 9.311229603577e-11, 1.559610284111e-10,
        2.925097755679e-07, 7.893013376542e-11, 9.417273008337e-11, 6.046422313641e-11,
        2.79540880152e-07, 9.906723378868e-11, 1.498176877069e-10, 3.146721523374e-11,
        2.904201324913e-07, 2.289902790761e-10, 2.494963269357e-10, 2.99859157525e-10,
        2.864393242735e-07, 2.414569078177e-10, 1.515582384241e-10, 4.121200175007e-10,
        2.840202012258e-07, 5.503328960713e-10, 5.575578402681e-10, 2.904297382908e-10],
    "step_bunches": [
        2.946175705204e-07, 2.175597763848e-10, 2.768657857529e-11, 2.212511764926e-10,
        2.800547889356e-07, 9.281800008043e-11, 1.638725811282e-11, 8.66468727958e-11,
        2.984826374605e-07, 8.641541710014e-11, 3.592293973092e-11, 6.617301999316e-11,
        2.910999683178e-07, 1.165837459874e-10, 1.102195187176e-10, 7.293477738049e-11,
        2.803254400829e-07, 1.811350054164e-10, 1.47833385227e-10, 2.694472394874e-10,
        2.89455600877e-07, 1.203042977387e-10, 6.055249494493e-11, 1.066455014743e-10,
        2.814705450521e-07, 5.526220382658e-10, 5.25653374069e-10, 3.078365527995e-10],
    "clusters": [
        2.824149862787e-07, 7.968630465561e-11, -7.183439243792e-11, -1.805212890876e-10,
        2.872490628206e-07, 2.049995346044e-10, -3.627737773248e-11, -2.945236386186e-10,
        2.832532440683e-07, 1.142738119392e-10, -5.911243349151e-11, -1.489083050801e-10,
        2.797368789872e-07, 1.314938915152e-10, 2.613209924264e-10, -1.954455345279e-10,
        2.934282055458e-07, 2.390370295558e-10, -1.069179982093e-10, -2.219410487952e-10,
        2.84846255286e-07, 2.433629241845e-10, -4.792592489878e-11, 1.547354327559e-10,
        2.886737529018e-07, 5.506420632576e-10, 4.457359232914e-10, 1.60996189527e-10],
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
