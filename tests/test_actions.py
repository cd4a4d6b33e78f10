"""The action table: DeepSPM's defaults, user files in TOML or CSV, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from deepspm_bluesky.actions import Action, ActionTable, load_actions

HEADER = "name,kind,dip_nm,bias_v,duration_s,forbid_radius_nm,require_free_nm,reset\n"
TOML_ROW = ('[[action]]\nname = "{name}"\nkind = "dip"\ndip_nm = -1.0\nbias_v = 0.02\n'
            'duration_s = 0.2\nforbid_radius_nm = 10.0\nrequire_free_nm = 1.0\nreset = true\n')


def test_the_default_table_is_deepspms_in_order():
    table = load_actions()
    assert table.names == [
        "stall", "pulse +2.5 V", "pulse +4 V", "pulse +8 V", "pulse -2.5 V", "pulse -4 V",
        "pulse -8 V", "dip -0.8 nm", "dip -1.0 nm", "dip -1.2 nm", "dip -1.8 nm",
        "dip -2.5 nm", "dip -5.0 nm", "stall for measurement"]
    forbid = [a.forbid_radius_nm for a in table]
    require = [a.require_free_nm for a in table]
    assert forbid == [50, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 25, 25, 5]
    assert require == [0, 0, 0, 100, 0, 0, 0, 1, 1, 2, 2, 3, 4, 100]


def test_reset_actions_are_the_strong_negative_pulse_and_the_dips():
    table = load_actions()
    assert [table[i].name for i in table.reset_indices()] == [
        "pulse -8 V", "dip -0.8 nm", "dip -1.0 nm", "dip -1.2 nm", "dip -1.8 nm",
        "dip -2.5 nm", "dip -5.0 nm"]


def test_dips_run_at_20_mv_for_200_ms():
    dips = [a for a in load_actions() if a.kind == "dip"]
    assert {(a.bias_v, a.duration_s) for a in dips} == {(0.02, 0.2)}


def test_allowed_masks_actions_needing_more_room_than_is_free():
    table = load_actions()
    allowed = table.allowed(1.5)
    assert allowed[table.index("dip -1.0 nm")]
    assert not allowed[table.index("dip -1.2 nm")]
    assert not allowed[table.index("pulse +8 V")]
    assert allowed.dtype == np.bool_ and allowed.shape == (len(table),)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown action 'dip -9 nm'; known: \\['stall'"):
        load_actions().index("dip -9 nm")


def test_a_user_csv_loads_in_its_own_order(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(HEADER + "poke,dip,-0.5,0.02,0.1,10,1,yes\nwait,stall,0,0,0,50,0,no\n")
    table = load_actions(path)
    assert table.names == ["poke", "wait"]
    assert table.get("poke") == Action("poke", "dip", -0.5, 0.02, 0.1, 10.0, 1.0, True)


def test_a_csv_written_by_a_spreadsheet_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("\ufeff" + HEADER + "wait,stall,0,0,0,50,0,false\n", encoding="utf-8")
    assert load_actions(path).names == ["wait"]


def test_a_user_toml_loads(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(TOML_ROW.format(name="a") + TOML_ROW.format(name="b"))
    assert load_actions(path).names == ["a", "b"]


@pytest.mark.parametrize(("row", "message"), [
    ("x,dip,-1,0.02,0.2,10,1,true,extra\n", "more or fewer cells"),
    ("x,dip,-1,0.02,0.2,10\n", "more or fewer cells"),
    ("x,dip,deep,0.02,0.2,10,1,true\n", "action 'x': dip_nm='deep' is not a valid float"),
    ("x,dip,-1,0.02,0.2,10,1,maybe\n", "reset='maybe' is not a valid bool"),
    ("x,dip,1,0.02,0.2,10,1,true\n", "dip_nm must be <= 0"),
    ("x,dip,0,0.02,0.2,10,1,true\n", "a dip needs a non-zero dip_nm"),
    ("x,pulse,0,0,0.2,10,0,false\n", "a pulse needs a non-zero bias_v"),
    ("x,stall,-1,0,0,10,0,false\n", "a stall does not dip"),
    ("x,zap,0,1,0.2,10,0,false\n", "kind 'zap' is not one of"),
    ("x,dip,-1,0.02,-0.2,10,1,true\n", "duration_s must not be negative"),
    ("x,dip,-1,0.02,nan,10,1,true\n", "duration_s is not a finite number"),
    (",dip,-1,0.02,0.2,10,1,true\n", "empty name"),
    ("x,dip,-1,0.02,0.2,10,1,true\nx,dip,-2,0.02,0.2,10,1,true\n", "unique; repeated: \\['x'\\]"),
])
def test_a_bad_csv_row_is_refused_naming_the_file_and_the_problem(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + row)
    with pytest.raises(ValueError, match=message) as err:
        load_actions(path)
    if "repeated" not in message:
        assert "bad.csv" in str(err.value)


def test_a_toml_row_missing_a_field_names_it(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(TOML_ROW.format(name="a").replace("reset = true\n", ""))
    with pytest.raises(ValueError, match="bad.toml: action 'a' is missing \\['reset'\\]"):
        load_actions(path)


def test_a_toml_row_with_an_unknown_field_names_it(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(TOML_ROW.format(name="a") + "colour = 'red'\n")
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        load_actions(path)


@pytest.mark.parametrize(("text", "message"), [
    ("[[action]\n", "not valid TOML"),
    ("title = 'no actions'\n", "expected a list of \\[\\[action\\]\\] tables"),
    ("action = [1, 2]\n", "expected a list of \\[\\[action\\]\\] tables"),
    ("action = []\n", "the action table is empty"),
])
def test_a_malformed_toml_file_is_refused(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_actions(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.toml does not exist"):
        load_actions(tmp_path / "nowhere.toml")


def test_an_unknown_format_is_refused(tmp_path):
    path = tmp_path / "actions.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match="unknown format '.json'"):
        load_actions(path)


def test_an_empty_table_is_refused():
    with pytest.raises(ValueError, match="empty"):
        ActionTable([])
