"""Hand-worked cases for the approach-area grid, forbidden discs, next location and state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from deepspm_bluesky.navigation import (
    MAX_DEBRIS_TRIES,
    Navigator,
    debris_radius_nm,
)


def reference_next(nav: Navigator) -> tuple[float, float] | None:
    """DeepSPM's getNextGoodClosest, loop for loop, on the navigator's mask."""
    x, y = nav.position[0] / nav.cell_nm, nav.position[1] / nav.cell_nm
    max_move = nav.max_move_nm / nav.cell_nm
    n, best, found = nav.half_cells, None, False
    for i in range(-n, n + 1):  # x
        for j in range(-n, n + 1):  # y
            if not nav.free[j + n, i + n]:
                continue
            ds2 = np.sqrt(float((i - x) * (i - x)) + float((j - y) * (j - y)))
            if ds2 > max_move:
                continue
            dist = nav.spiral_reg * max(abs(i), abs(j)) + ds2
            if not found or dist < best[0]:
                found, best = True, (dist, i, j)
    return None if best is None else (best[1] * nav.cell_nm, best[2] * nav.cell_nm)


# -- grid ----------------------------------------------------------------------------------
@pytest.mark.parametrize("area_nm, margin_nm, cells, edge_nm", [
    (850.0, 0.0, 85, 420.0), (100.0, 0.0, 11, 50.0), (100.0, 10.0, 9, 40.0), (15.0, 0.0, 1, 0.0),
])
def test_the_grid_has_a_cell_at_the_centre_and_reaches_the_margin(area_nm, margin_nm, cells,
                                                                 edge_nm):
    nav = Navigator(area_nm, margin_nm=margin_nm)
    assert nav.free.shape == (cells, cells)
    assert_allclose([nav.x_nm[0], nav.x_nm[-1]], [-edge_nm, edge_nm])


# -- forbidden discs -----------------------------------------------------------------------
@pytest.mark.parametrize("x_nm, y_nm, radius_nm, forbidden", [
    (0.0, 0.0, 0.0, 0),
    (0.0, 0.0, 10.0, 1),  # the neighbours lie exactly 10 nm away: still free
    (0.0, 0.0, 10.01, 5),
    (0.0, 0.0, 15.0, 9),  # diagonals at 14.1 nm
    (5.0, 5.0, 8.0, 4),  # between four cells, each 7.1 nm away
    (50.0, 50.0, 10.01, 3),  # in a corner: the disc is cut by the edge
])
def test_a_forbidden_disc_covers_the_cells_closer_than_its_radius(x_nm, y_nm, radius_nm,
                                                                 forbidden):
    nav = Navigator(100.0)
    nav.forbid(x_nm, y_nm, radius_nm)
    assert nav.free.size - nav.free.sum() == forbidden


def test_the_mask_is_indexed_y_then_x():
    nav = Navigator(100.0)
    nav.forbid(50.0, -50.0, 1.0)
    assert not nav.free[0, -1]  # row 0 is y = -50, last column is x = +50
    assert nav.free.sum() == nav.free.size - 1


# -- next location -------------------------------------------------------------------------
def test_a_fresh_area_starts_at_its_centre():
    assert Navigator(850.0).next_location() == (0.0, 0.0)


def test_after_the_centre_the_tie_between_neighbours_goes_to_the_smallest_x():
    nav = Navigator(100.0)
    nav.forbid(0.0, 0.0, 5.0)
    assert nav.next_location() == (-10.0, 0.0)  # cost 1 + 1 for all four; diagonals 1 + 1.41


def test_from_a_neighbour_the_spiral_turns_to_the_nearest_ring_cell():
    nav = Navigator(100.0)
    nav.forbid(0.0, 0.0, 5.0)
    nav.move_to(-10.0, 0.0)
    nav.forbid(-10.0, 0.0, 5.0)
    # ring cells (-10, +-10) cost 1 + 1; (0, +-10) cost 1 + 1.41; (-20, 0) costs 2 + 1
    assert nav.next_location() == (-10.0, -10.0)


def test_a_large_spiral_weight_prefers_cells_near_the_centre_over_near_ones():
    nav = Navigator(100.0, spiral_reg=10.0)
    nav.forbid(0.0, 0.0, 5.0)
    nav.move_to(40.0, 40.0)
    assert max(map(abs, nav.next_location())) == 10.0


@pytest.mark.parametrize("seed", range(5))
def test_next_location_matches_the_reference_loop_along_a_random_survey(seed):
    rng = np.random.default_rng(seed)
    nav = Navigator(200.0, max_move_nm=float(rng.uniform(20, 120)),
                    spiral_reg=float(rng.choice([0.0, 1.0, 2.5])))
    for _ in range(40):
        expected = reference_next(nav)
        assert nav.next_location() == expected
        if expected is None:
            break
        # the action happens off the cell centre, but inside the area
        x, y = np.clip(expected + rng.uniform(-4, 4, 2), -100.0, 100.0)
        nav.move_to(x, y)
        nav.forbid(x, y, float(rng.choice([5.0, 10.0, 25.0, 50.0])))


def test_an_area_with_no_free_cell_in_reach_is_exhausted():
    nav = Navigator(100.0, max_move_nm=15.0)
    nav.forbid(0.0, 0.0, 25.0)  # free cells remain, but all of them 25 nm or more away
    assert nav.free.any()
    assert nav.next_location() is None
    assert nav.exhausted


def test_a_new_area_frees_every_cell_and_returns_to_the_centre():
    nav = Navigator(100.0)
    nav.move_to(20.0, 30.0)
    nav.forbid(0.0, 0.0, 500.0)
    nav.mark_debris()
    assert nav.exhausted
    nav.new_area()
    assert nav.free.all() and nav.position == (0.0, 0.0)
    assert (nav.area_index, nav.debris_count) == (1, 0)
    assert nav.next_location() == (0.0, 0.0)


# -- debris --------------------------------------------------------------------------------
@pytest.mark.parametrize("count, radius_nm", [(1, 25.0), (2, 25.0 * math.sqrt(2)), (4, 50.0),
                                              (100, 250.0)])
def test_the_debris_radius_grows_with_half_the_square_root_of_the_count(count, radius_nm):
    assert debris_radius_nm(count) == pytest.approx(radius_nm)


@pytest.mark.parametrize("count", [0, -1, 1.5, True])
def test_a_debris_count_below_one_or_not_whole_is_rejected(count):
    with pytest.raises(ValueError, match="debris count"):
        debris_radius_nm(count)


def test_repeated_debris_forbids_growing_discs_at_the_position():
    nav, expected = Navigator(200.0), Navigator(200.0)
    nav.move_to(20.0, -10.0)
    radii = [nav.mark_debris() for _ in range(3)]
    assert_allclose(radii, [25.0, 25.0 * math.sqrt(2), 25.0 * math.sqrt(3)])
    expected.forbid(20.0, -10.0, radii[-1])
    assert_array_equal(nav.free, expected.free)
    assert nav.debris_count == 3
    nav.clear_debris()
    assert nav.mark_debris() == 25.0


def test_the_debris_limit_is_reached_after_250_in_a_row():
    nav = Navigator(100.0)
    nav.debris_count = MAX_DEBRIS_TRIES - 1
    assert not nav.debris_limit_reached
    nav.mark_debris()
    assert nav.debris_limit_reached


# -- state on disk -------------------------------------------------------------------------
def surveyed(**options) -> Navigator:
    nav = Navigator(300.0, max_move_nm=120.0, spiral_reg=2.0, **options)
    for x, y, r in [(0, 0, 50), (60, -30, 10), (-100, 100, 25)]:
        nav.move_to(x, y)
        nav.forbid(x, y, r)
    nav.mark_debris()
    nav.area_index = 3
    return nav


def assert_same_state(a: Navigator, b: Navigator) -> None:
    assert_array_equal(a.free, b.free)
    assert (a.position, a.area_index, a.debris_count) == (b.position, b.area_index,
                                                          b.debris_count)
    assert a._settings() == b._settings()
    assert a.next_location() == b.next_location()


def test_a_saved_state_loads_back_the_same(tmp_path):
    nav = surveyed()
    path = nav.save(tmp_path / "nav.npz")
    assert_same_state(Navigator.load(path), nav)


def test_a_saved_state_restores_into_a_navigator_of_the_same_grid(tmp_path):
    nav = surveyed()
    nav.save(tmp_path / "nav.npz")
    fresh = Navigator(300.0, max_move_nm=120.0, spiral_reg=2.0)
    fresh.restore(tmp_path / "nav.npz")
    assert_same_state(fresh, nav)


def test_a_resumed_navigator_continues_where_the_stopped_one_left(tmp_path):
    path = tmp_path / "survey" / "nav.npz"
    path.parent.mkdir()
    first = Navigator.resume(path, 300.0, max_move_nm=120.0)
    first.forbid(0.0, 0.0, 40.0)
    first.move_to(*first.next_location())  # every change is on disk at once
    second = Navigator.resume(path, 300.0, max_move_nm=120.0)
    assert_same_state(second, first)
    assert not (tmp_path / "survey" / "nav.npz.partial").exists()


def test_restoring_a_state_of_another_grid_names_the_mismatch(tmp_path):
    surveyed().save(tmp_path / "nav.npz")
    with pytest.raises(ValueError, match=r"another grid \(area_nm: file 300.0, here 850.0"):
        Navigator(850.0).restore(tmp_path / "nav.npz")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make_file, message", [
    (lambda p: _write(p, b"not a navigation state"), "corrupt"),
    (lambda p: _write(p, surveyed().save(p).read_bytes()[:200]), "corrupt"),
    (lambda p: (np.savez(p, free=np.ones((3, 3), bool)), p)[1], "corrupt"),
    (lambda p: (np.savez(p, free=np.ones((3, 3), bool), meta=np.array('{"format": "x"}')),
                p)[1], "not a deepspm-bluesky navigation file"),
])
def test_a_corrupt_state_file_raises_a_clear_value_error(tmp_path, make_file, message):
    path = make_file(tmp_path / "nav.npz")
    with pytest.raises(ValueError, match=message):
        Navigator.load(path)


def test_a_state_file_of_another_version_is_refused(tmp_path, monkeypatch):
    import deepspm_bluesky.navigation as navigation

    surveyed().save(tmp_path / "nav.npz")
    monkeypatch.setattr(navigation, "STATE_VERSION", 2)
    with pytest.raises(ValueError, match="version 1"):
        Navigator.load(tmp_path / "nav.npz")


def test_a_missing_state_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Navigator.load(tmp_path / "nowhere.npz")


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("area_nm, options, message", [
    (0.0, {}, "area_nm"), (math.nan, {}, "area_nm"), (100.0, {"cell_nm": 0.0}, "cell_nm"),
    (100.0, {"margin_nm": 60.0}, "margin"), (100.0, {"max_move_nm": -1.0}, "max_move_nm"),
])
def test_an_impossible_grid_raises_a_value_error(area_nm, options, message):
    with pytest.raises(ValueError, match=message):
        Navigator(area_nm, **options)


@pytest.mark.parametrize("x_nm, y_nm", [(60.0, 0.0), (0.0, -50.01), (math.nan, 0.0)])
def test_a_position_outside_the_area_raises_a_value_error(x_nm, y_nm):
    with pytest.raises(ValueError, match="x_nm|outside"):
        Navigator(100.0).move_to(x_nm, y_nm)


def test_a_negative_radius_raises_a_value_error():
    with pytest.raises(ValueError, match="radius_nm"):
        Navigator(100.0).forbid(0.0, 0.0, -1.0)
