"""Leave-one-family-out, the cheap way: a read-out of the shipped classifier's features."""

from __future__ import annotations

from deepspm_bluesky.ml.generalisation import ALL, read_out_rows, table


def test_the_read_out_scores_each_held_out_family_and_all_of_them_in_a_table():
    rows = read_out_rows(["au111", "graphite"], n_train=16, n_test=10, seed=3)
    assert [row["held_out"] for row in rows] == ["au111", "graphite", ALL]
    assert "auc_held_out" not in rows[-1]
    for row in rows:
        assert 0.0 <= row["auc_trained"] <= 1.0
        assert row is rows[-1] or 0.0 <= row["auc_held_out"] <= 1.0
    lines = table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[-1].startswith(f"| {ALL} | - |")
