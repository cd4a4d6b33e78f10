"""The garbage collector around a long-running command's setup (`deepspm_bluesky.collector`)."""

from __future__ import annotations

import gc

import pytest

from deepspm_bluesky.collector import setting_up, settle


@pytest.fixture
def unfrozen():
    """Whatever a test freezes goes back to the collector afterwards."""
    yield
    gc.unfreeze()
    gc.enable()


def test_setup_runs_without_collections_and_settling_freezes_what_it_made(unfrozen):
    with setting_up():
        assert not gc.isenabled()
        kept = [[index] for index in range(1000)]  # what a command builds and keeps
        settle()
        assert gc.isenabled() and gc.get_freeze_count() >= len(kept)
    assert gc.isenabled()


def test_a_setup_that_fails_leaves_the_collector_on(unfrozen):
    frozen = gc.get_freeze_count()  # other tests' in-process commands may have settled
    with pytest.raises(SystemExit), setting_up():
        raise SystemExit(2)  # a bad option, before anything settled
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_a_served_app_starts_with_what_is_alive_frozen(unfrozen, monkeypatch):
    """`serve` (and `serve_catalog`) settle before uvicorn answers the first client."""
    import uvicorn

    from deepspm_bluesky.data import run_app

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: seen.update(frozen=gc.get_freeze_count()))
    gc.unfreeze()
    run_app(object(), host="127.0.0.1", port=0)
    assert seen["frozen"] > 10_000  # this process's imports, at least
