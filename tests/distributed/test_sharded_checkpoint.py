"""Sharded checkpoints with orbax: params and optimizer state saved from a 4x2 mesh of 8 (fake
CPU) devices come back on an 8x1 layout and training continues bit for bit as if it had never
stopped, with the pure transforms' state and with the stateful ``Adam``'s ``state_dict()``.

Runs in a subprocess: the device count must be set before JAX starts.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import early


def worker_run(folder: str) -> tuple[list[str], dict]:
    worker = Path(__file__).with_name("checkpoint_worker.py")
    return [sys.executable, str(worker), folder], dict(os.environ)


EARLY = {"checkpoint_worker": worker_run}  # ~10 s: it runs beside the rest of the suite


@pytest.fixture(scope="module")
def findings() -> dict:
    out = early.succeeded("checkpoint_worker", worker_run)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("face", ["pure", "stateful"])
def test_restored_arrays_take_the_new_layout(findings, face):
    assert findings[face]["restored_on_new_mesh"]


def test_restored_pure_state_has_the_asked_shardings_and_the_saved_values(findings):
    assert findings["pure"]["restored_as_asked"]
    assert findings["pure"]["restored_values_differ_at"] == []


def test_load_state_dict_keeps_the_restored_layout(findings):
    assert findings["stateful"]["loaded_state_on_new_mesh"]


def test_checkpoint_carries_the_scheduled_learning_rate(findings):
    assert findings["stateful"]["lr"] == 5e-3


@pytest.mark.parametrize("face", ["pure", "stateful"])
def test_training_resumed_on_the_new_layout_matches_uninterrupted_training(findings, face):
    assert findings[face]["resumed_on_new_mesh"]
    assert findings[face]["resumed_differs_at"] == []


def test_load_state_dict_moves_state_saved_in_another_layout_onto_the_params(findings):
    """orbax restores without a target in the saved (4x2) layout; like torch moving loaded state
    to its parameter's device, ``load_state_dict`` must lay it out as the (8x1) params are."""
    saved_layout = findings["saved_layout"]
    assert saved_layout["restored_on_saved_mesh"]
    assert "error" not in saved_layout, saved_layout.get("error")
    assert saved_layout["loaded_state_on_new_mesh"]
    assert saved_layout["resumed_differs_at"] == []
