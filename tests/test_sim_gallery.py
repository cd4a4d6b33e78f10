"""The gallery shows one image per tip state, and writes a PNG a person can look at."""

from __future__ import annotations

import numpy as np

from deepspm_bluesky.sim import STATES
from deepspm_bluesky.sim.gallery import draw_gallery, gallery_images


def test_the_gallery_has_one_image_per_state_plus_a_dip_and_an_overview():
    images = gallery_images(seed=0, pixels=32)
    assert list(images)[:len(STATES)] == list(STATES)
    assert set(images) - set(STATES) == {"after dip -2.5 nm", "overview 200 nm"}


def test_the_gallery_images_show_the_flat_states_flat_and_the_others_not():
    images = gallery_images(seed=0, pixels=32)
    flat = {name for name, image in images.items() if np.ptp(image) < 1e-25}
    assert flat == {"crashed", "no_contact"}


def test_draw_gallery_writes_a_png(tmp_path):
    path = draw_gallery(tmp_path / "gallery.png", seed=1, pixels=32)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000


def test_the_simulator_imports_neither_bluesky_nor_ophyd_nor_matplotlib():
    import subprocess
    import sys

    code = ("import sys, deepspm_bluesky.sim, deepspm_bluesky.sim.gallery; "
            "print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'bluesky', 'ophyd', 'matplotlib', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_gallery_shows_every_family_with_every_imaging_tip_state():
    from deepspm_bluesky.sim import FAMILIES
    from deepspm_bluesky.sim.gallery import IMAGING_STATES, family_images

    images = family_images(seed=0, pixels=16)
    assert set(images) == {(f, s) for f in FAMILIES for s in IMAGING_STATES}
    assert all(np.ptp(image) > 0 for image in images.values())
