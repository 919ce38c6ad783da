"""Sharded params across 8 (fake CPU) devices: optimizer state takes each parameter's sharding,
updates keep it, elementwise algorithms compile to no collectives, and the stateful class keeps
shardings across its donated steps. Runs in a subprocess: the device count must be set before
JAX starts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def findings():
    worker = Path(__file__).with_name("sharded_worker.py")
    out = subprocess.run([sys.executable, str(worker)], check=True, capture_output=True, text=True,
                         timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


ELEMENTWISE = ["sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "asgd", "nadam", "radam",
               "rmsprop", "rprop"]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_update_keeps_shardings_and_adds_no_collectives(findings, name):
    assert findings[name] == {
        "state_follows_params": True,
        "collectives": [],
        "params_keep_sharding": True,
        "state_keeps_sharding": True,
    }


def test_stateful_optimizer_keeps_shardings_across_donated_steps(findings):
    assert findings["stateful"] == {"params_keep_sharding": True, "state_follows_params": True}
