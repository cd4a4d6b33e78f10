"""The session factory and the survey command in one process (typer's CliRunner): scan ids
that grow across sessions, classifier and agent by name, start metadata, clean refusals."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deepspm_bluesky.cli import app
from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.ml import ConditioningAgent, RandomAgent, TipClassifier
from deepspm_bluesky.ml.named import agent_named, classifier_named
from deepspm_bluesky.profiles import ipython as profile
from deepspm_bluesky.session import InstrumentSettings, SessionError

runner = CliRunner()


def survey(catalog, *args: str):
    return runner.invoke(app, ["survey", "--images", "2", "--catalog", str(catalog), *args])


@pytest.fixture(scope="module")
def three_surveys(tmp_path_factory):
    """One catalog, three surveys from three sessions of the command line."""
    folder = tmp_path_factory.mktemp("surveys")
    catalog, state = folder / "catalog", folder / "state"
    results = [
        survey(catalog, "--sample", "Ag(100)", "--md", "operator=ada", "--md", "temperature_k=4.2"),
        survey(catalog, "--agent", "random", "--seed", "1"),
        survey(catalog, "--state", str(state)),
    ]
    return catalog, results, open_catalog(catalog)


def test_scan_ids_grow_across_sessions_of_one_catalog(three_surveys):
    catalog, results, client = three_surveys
    assert [result.exit_code for result in results] == [0, 0, 0], results[0].output
    assert [run.start["scan_id"] for run in client.values()] == [1, 2, 3]
    assert client[1].start["uid"] != client[-1].start["uid"]
    assert client[3].start["uid"] == client[-1].start["uid"]
    assert "(scan_id 3)" in results[2].output


def test_sample_and_md_reach_the_start_document_with_json_values(three_surveys):
    _, _, client = three_surveys
    start = client[1].start
    assert (start["sample"], start["operator"], start["temperature_k"]) == ("Ag(100)", "ada", 4.2)


def test_the_agent_chosen_by_name_is_recorded_with_the_plan(three_surveys):
    _, _, client = three_surveys
    assert client[2].start["plan_args"]["agent"] == "random"


def test_an_unknown_classifier_is_refused_before_a_run_opens(three_surveys):
    catalog, _, client = three_surveys
    result = survey(catalog, "--classifier", "pretraind")
    assert result.exit_code == 2
    assert "unknown classifier 'pretraind'" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2
    assert len(client) == 3


@pytest.mark.parametrize("option", ["--classifier", "--agent"])
def test_a_mistyped_name_creates_no_catalog(tmp_path, option):
    result = survey(tmp_path / "catalog", option, "pretraind")
    assert result.exit_code == 2 and "'pretraind'" in result.output
    assert not (tmp_path / "catalog").exists()


def test_a_corrupt_navigation_file_is_named_and_refused(three_surveys, tmp_path):
    catalog, _, client = three_surveys
    navigation = tmp_path / "nav.npz"
    navigation.write_bytes(b"not a navigation state")
    result = survey(catalog, "--navigation-file", str(navigation))
    assert result.exit_code == 2
    assert "nav.npz" in result.output and "corrupt" in result.output
    assert len(result.output.strip().splitlines()) <= 2


def test_a_corrupt_state_file_is_named_and_refused(three_surveys):
    catalog, _, client = three_surveys
    progress = catalog.parent / "state" / "policy.json"
    progress.write_text("{ half a file")
    result = survey(catalog, "--state", str(progress.parent))
    assert result.exit_code == 2
    assert "policy.json" in result.output and "corrupt" in result.output


def test_md_without_an_equals_sign_is_refused(tmp_path):
    result = survey(tmp_path / "catalog", "--md", "operator")
    assert result.exit_code == 2 and "key=value" in result.output
    assert not (tmp_path / "catalog").exists()


def test_names_give_the_shipped_the_random_or_a_saved_model(tmp_path):
    assert isinstance(agent_named("random"), RandomAgent)
    assert isinstance(agent_named("pretrained"), ConditioningAgent)
    assert classifier_named("pretrained-ag100").fingerprint() != \
        classifier_named("pretrained").fingerprint()
    saved = TipClassifier.pretrained().save(tmp_path / "mine.pt")
    assert isinstance(classifier_named(str(saved)), TipClassifier)
    with pytest.raises(ValueError, match="agent .*mine.pt.* cannot be used"):
        agent_named(str(saved))  # a classifier's checkpoint is no agent
    with pytest.raises(ValueError, match="unknown classifier 'random'"):
        classifier_named("random")
    with pytest.raises(ValueError, match="unknown agent 'smart'"):
        agent_named("smart")


def test_a_network_backend_without_a_host_names_the_missing_variable():
    with pytest.raises(SessionError, match="DEEPSPM_HOST"):
        InstrumentSettings.from_environment({"DEEPSPM_BACKEND": "labview", "DEEPSPM_PORT": "1"})
    settings = InstrumentSettings.from_environment({"DEEPSPM_SEED": "4"})
    assert (settings.backend, settings.seed) == ("sim", 4)


def test_the_profile_is_installed_once_and_an_edited_copy_kept_on_update(tmp_path, monkeypatch):
    startup = profile.install_profile(tmp_path) / "startup" / profile.STARTUP_NAME
    shipped = startup.read_text()
    edited = shipped + "stm.scanner.speed_nm_s.put(40)\n"
    startup.write_text(edited)
    profile.install_profile(tmp_path)
    assert startup.read_text() == edited, "the same version never overwrites edits"
    monkeypatch.setattr(profile, "__version__", "99.0")
    said = []
    profile.install_profile(tmp_path, echo=said.append)
    assert "deepspm-bluesky 99.0" in startup.read_text()
    (backup,) = startup.parent.glob("*.bak")
    assert backup.read_text() == edited and str(backup) in said[0]
    monkeypatch.setattr(profile, "__version__", "99.1")
    profile.install_profile(tmp_path, echo=said.append)
    assert len(said) == 1, "an unedited file is replaced without a backup"
    assert "deepspm-bluesky 99.1" in startup.read_text()
