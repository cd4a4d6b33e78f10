"""The Tiled store: locations, errors."""

from __future__ import annotations

import pytest

from deepspm_bluesky.data import ENV_VAR, default_catalog, open_catalog


def test_the_environment_variable_names_the_default_catalog(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "here"))
    assert default_catalog() == str(tmp_path / "here")


def test_without_the_variable_the_catalog_lives_in_a_per_user_folder(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_catalog().endswith("catalog")
    assert "deepspm-bluesky" in default_catalog()


def test_a_new_catalog_directory_is_created_empty(tmp_path):
    client = open_catalog(tmp_path / "new")
    assert len(client) == 0
    assert (tmp_path / "new" / "catalog.db").is_file()


def test_a_file_in_place_of_the_catalog_directory_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a catalog")
    with pytest.raises(NotADirectoryError, match="is a file"):
        open_catalog(tmp_path / "file")
