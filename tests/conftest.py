"""Shared fixtures: a RunEngine that validates every document, simulated STMs, a catalog."""

from __future__ import annotations

import os

import event_model
import pytest
import torch
from bluesky import RunEngine

from deepspm_bluesky.devices import simulated_stm

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one torch thread each, or they fight
    torch.set_num_threads(1)


@pytest.fixture
def documents():
    """Every (name, doc) the RunEngine emitted, in order."""
    return []


@pytest.fixture
def RE(documents):
    """A RunEngine that checks each document against the event-model schema and keeps it."""
    engine = RunEngine({}, call_returns_result=False)

    def validate(name, doc):
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)
        documents.append((name, doc))

    engine.subscribe(validate)
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture
def stm():
    """A simulated STM with a good tip and a fixed seed."""
    device = simulated_stm(seed=7)
    yield device
    device.destroy()


@pytest.fixture
def catalog_dir(tmp_path):
    return tmp_path / "catalog"
