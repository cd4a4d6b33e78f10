"""The Ophyd STM: components and kinds, image description, safety limits that refuse before
anything moves, conditioner, z controller and coarse motor, all on the simulator."""

from __future__ import annotations

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky.plans import count

from deepspm_bluesky.devices import STM, simulated_stm
from deepspm_bluesky.sim import SimulatedMicroscope


class RecordingMicroscope(SimulatedMicroscope):
    """The simulator, noting every backend call that would move or change something."""

    def __init__(self, **kwargs) -> None:
        self.calls: list[tuple] = []
        super().__init__(**kwargs)
        self.calls.clear()

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name in ("scan", "condition", "tip_clean", "approach", "withdraw", "move_area",
                    "set_bias", "set_setpoint", "set_scan_speed"):
            def recorded(*args):
                super(RecordingMicroscope, self).__getattribute__("calls").append((name, *args))
                return attr(*args)
            return recorded
        return attr


@pytest.fixture
def recorded():
    device = STM(backend=RecordingMicroscope(seed=3), name="stm")
    yield device
    device.destroy()


def test_the_image_reads_as_stm_image_with_its_shape_and_dtype(stm):
    stm.trigger().wait(timeout=10)
    description = stm.describe()["stm_image"]
    assert description["shape"] == [64, 64]
    assert np.dtype(description["dtype_numpy"]) == np.float32
    assert description["dtype"] == "array"
    assert stm.read()["stm_image"]["value"].shape == (64, 64)


def test_the_image_shape_follows_the_pixel_setting(stm):
    stm.scanner.pixels.set(32).wait(timeout=5)
    stm.trigger().wait(timeout=10)
    assert stm.describe()["stm_image"]["shape"] == [32, 32]
    assert stm.image.get().shape == (32, 32)


def test_position_is_hinted_and_settings_are_configuration(stm):
    assert set(stm.hints["fields"]) >= {"stm_scanner_x_nm", "stm_scanner_y_nm"}
    config = set(stm.read_configuration())
    assert config >= {"stm_scanner_size_nm", "stm_scanner_pixels", "stm_scanner_speed_nm_s",
                      "stm_bias", "stm_current", "stm_zctrl_z_range_nm",
                      "stm_conditioner_max_bias_v", "stm_conditioner_max_dip_nm"}
    assert {"stm_image", "stm_zctrl_in_contact", "stm_coarse_area"} <= set(stm.read())


def test_limits_come_from_the_backend_ranges(stm):
    assert stm.scanner.x_nm.limits == pytest.approx((-425.0, 425.0))
    assert stm.zctrl.z_range_nm.get() == pytest.approx(1000.0)


@pytest.mark.parametrize(("signal", "value", "message"), [
    ("bias", 12.0, "outside the safety limits"),
    ("current", 1e-6, "outside the safety limits"),
    ("scanner.size_nm", 900.0, "outside the safety limits"),
    ("scanner.x_nm", 422.0, "leaves the piezo range"),
    ("scanner.pixels", 64.5, "whole number"),
    ("bias", float("nan"), "not a finite number"),
])
def test_an_out_of_range_setting_raises_before_anything_moves(recorded, signal, value, message):
    target = recorded
    for part in signal.split("."):
        target = getattr(target, part)
    before = target.get()
    with pytest.raises(ValueError, match=message):
        target.set(value)
    assert target.get() == before
    assert recorded.backend.calls == []


def test_a_larger_frame_must_still_fit_around_the_current_centre(recorded):
    recorded.scanner.x_nm.set(400.0).wait(timeout=5)
    with pytest.raises(ValueError, match="stm_scanner_size_nm.*piezo range"):
        recorded.scanner.size_nm.set(60.0)
    assert recorded.scanner.size_nm.get() == 10.0


def test_an_out_of_range_move_in_a_plan_fails_the_plan_and_leaves_the_bias(RE, recorded):
    with pytest.raises(Exception, match="safety limits"):
        RE(bps.mv(recorded.bias, 20.0))
    assert recorded.bias.get() == 1.0
    assert recorded.backend.calls == []


def test_bias_and_setpoint_reach_the_instrument_in_si_units(recorded):
    recorded.bias.set(-0.5).wait(timeout=5)
    recorded.current.set(50e-12).wait(timeout=5)
    recorded.scanner.speed_nm_s.set(40.0).wait(timeout=5)
    assert recorded.backend.calls == [("set_bias", -0.5), ("set_setpoint", 50e-12),
                                      ("set_scan_speed", pytest.approx(40e-9))]


def test_the_scan_speed_starts_from_the_simulator_option():
    device = simulated_stm(seed=0, scan_speed_m_s=120e-9)
    assert device.scanner.speed_nm_s.get() == pytest.approx(120.0)
    device.destroy()


def test_trigger_scans_the_frame_in_metres(recorded):
    recorded.scanner.x_nm.set(100.0).wait(timeout=5)
    recorded.scanner.size_nm.set(20.0).wait(timeout=5)
    recorded.trigger().wait(timeout=10)
    assert recorded.backend.calls == [("scan", pytest.approx(100e-9), 0.0,
                                       pytest.approx(20e-9), 64)]


def test_the_conditioner_runs_a_named_action_at_the_scanner_centre(recorded):
    recorded.scanner.y_nm.set(-30.0).wait(timeout=5)
    recorded.conditioner.set("dip -1.2 nm").wait(timeout=5)
    (name, action, x, y), = recorded.backend.calls
    assert (name, action.name, x, y) == ("condition", "dip -1.2 nm", 0.0, pytest.approx(-30e-9))
    assert recorded.conditioner.last_action.get() == "dip -1.2 nm"


def test_the_conditioner_runs_an_action_at_a_given_place(recorded):
    recorded.conditioner.set(("pulse +4 V", 200.0, -100.0)).wait(timeout=5)
    (_, action, x, y), = recorded.backend.calls
    assert (action.name, x, y) == ("pulse +4 V", pytest.approx(200e-9), pytest.approx(-100e-9))


@pytest.mark.parametrize(("request_", "error", "message"), [
    ("dip -9 nm", KeyError, "unknown action"),
    (("dip -1.2 nm", 500.0, 0.0), ValueError, "outside the piezo range"),
    (("dip -1.2 nm", "left"), ValueError, "neither an action name"),
])
def test_a_bad_conditioner_request_raises_before_anything_moves(recorded, request_, error,
                                                                message):
    with pytest.raises(error, match=message):
        recorded.conditioner.set(request_)
    assert recorded.backend.calls == []


def test_an_action_beyond_the_dip_limit_is_refused(tmp_path):
    table = tmp_path / "actions.csv"
    table.write_text("name,kind,dip_nm,bias_v,duration_s,forbid_radius_nm,require_free_nm,reset\n"
                     "deep,dip,-8,0.02,0.2,25,4,true\nhot,pulse,0,12,0.2,10,0,false\n")
    device = STM(backend=RecordingMicroscope(seed=0), actions=table, name="stm")
    with pytest.raises(ValueError, match="dip -8.0 nm exceeds the safety limit"):
        device.conditioner.set("deep")
    with pytest.raises(ValueError, match="bias 12.0 V exceeds the safety limit"):
        device.conditioner.set("hot")
    assert device.backend.calls == []
    device.destroy()


@pytest.mark.parametrize("limit", ["max_bias_v", "max_dip_nm"])
def test_a_nan_safety_limit_refuses_every_action_instead_of_none(recorded, limit):
    getattr(recorded.conditioner, limit).put(float("nan"))
    with pytest.raises(ValueError, match="exceeds the safety limit of nan"):
        recorded.conditioner.set("dip -1.2 nm" if limit == "max_dip_nm" else "pulse +4 V")
    assert recorded.backend.calls == []


def test_simulated_stm_takes_an_action_table_file(tmp_path):
    table = tmp_path / "mine.toml"
    table.write_text('[[action]]\nname = "only"\nkind = "stall"\ndip_nm = 0.0\nbias_v = 0.0\n'
                     'duration_s = 0.0\nforbid_radius_nm = 5.0\nrequire_free_nm = 0.0\n'
                     'reset = false\n')
    device = simulated_stm(seed=0, actions=table)
    assert device.actions.names == ["only"]
    device.destroy()


def test_withdraw_and_approach_set_the_contact_flag(stm):
    stm.zctrl.set("withdraw").wait(timeout=5)
    assert stm.zctrl.in_contact.get() is False
    stm.zctrl.set("approach").wait(timeout=5)
    assert stm.zctrl.in_contact.get() is True


def test_a_scan_at_the_retracted_z_limit_clears_the_contact_flag():
    device = simulated_stm(seed=0, tip_state="no_contact")
    device.trigger().wait(timeout=10)
    assert device.zctrl.in_contact.get() is False
    device.destroy()


def test_tip_clean_after_a_crash_gives_an_image_again():
    device = simulated_stm(seed=0, tip_state="crashed")
    device.trigger().wait(timeout=10)
    assert np.ptp(device.image.get()) == 0
    device.zctrl.set("clean").wait(timeout=5)
    device.trigger().wait(timeout=10)
    assert np.ptp(device.image.get()) > 1e-11
    device.destroy()


def test_an_unknown_z_command_is_refused(stm):
    with pytest.raises(ValueError, match="unknown z-controller command"):
        stm.zctrl.set("jump")


def test_a_coarse_move_counts_the_approach_areas(stm):
    stm.coarse.set("y+").wait(timeout=5)
    assert stm.coarse.area.get() == 1
    assert stm.backend.area_index == 1
    with pytest.raises(ValueError, match="unknown coarse direction"):
        stm.coarse.set("up")


def test_a_backend_without_the_calls_is_refused():
    with pytest.raises(TypeError, match="does not implement"):
        STM(backend=object(), name="stm")


def test_count_records_images_in_the_primary_stream(RE, stm, documents):
    RE(count([stm], 2))
    events = [doc for name, doc in documents if name == "event"]
    assert len(events) == 2
    assert all(np.asarray(e["data"]["stm_image"]).shape == (64, 64) for e in events)
    descriptor = next(doc for name, doc in documents if name == "descriptor")
    assert descriptor["data_keys"]["stm_image"]["shape"] == [64, 64]


def test_a_failing_scan_fails_the_status_with_the_reason(stm):
    stm.backend.scan = lambda *args: np.full((64, 64), np.nan)
    with pytest.raises(ValueError, match="non-finite pixels"):
        stm.trigger().wait(timeout=10)


def test_a_realtime_simulated_stm_paces_its_scans_on_the_injected_clock():
    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    device = simulated_stm(seed=0, realtime=1.0, sleep=sleep, clock=lambda: now[0])
    slept.clear()
    device.trigger().wait(timeout=10)
    assert slept == [pytest.approx(2 * 64 * 10e-9 / 80e-9)]
    device.destroy()


@pytest.mark.parametrize(("component", "request_"), [
    ("conditioner", "pulse +4 V"), ("zctrl", "clean"), ("zctrl", "approach"), ("coarse", "y+"),
])
def test_an_act_that_completes_reports_outcome_done_and_its_signal_is_omitted(recorded,
                                                                              component,
                                                                              request_):
    device = getattr(recorded, component)
    device.outcome.put("unknown")
    device.set(request_).wait(timeout=10)
    assert device.outcome.get() == "done"
    assert device.outcome.kind.name == "omitted"
    assert device.outcome.name not in recorded.read()


def test_a_put_of_the_value_a_setting_already_holds_is_not_forwarded(recorded):
    recorded.bias.put(recorded.bias.get())
    recorded.current.put(recorded.current.get())
    assert recorded.backend.calls == []
    recorded.bias.put(0.5)
    assert recorded.backend.calls == [("set_bias", 0.5)]


def test_the_instrument_metadata_of_a_simulated_stm_names_it_and_its_ranges(stm):
    assert stm.instrument_metadata() == {"backend": "sim", "seed": 7, "scan_range_nm": 850.0,
                                         "z_range_nm": 1000.0}
