"""The examples run end to end and reach what their docstrings promise."""

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Imports ``examples/<name>.py`` by path: examples are scripts, not a package."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (flax modules) look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quickstart() -> Iterator[ModuleType]:
    module = load_example("quickstart")
    yield module
    del sys.modules[module.__name__]


def test_quickstart_defaults_reach_95_percent(quickstart, capsys):
    accuracy = quickstart.main([])
    assert accuracy >= 0.95
    assert f"test accuracy: {accuracy:.1%}" in capsys.readouterr().out


def test_quickstart_saves_loss_plot(quickstart, tmp_path):
    plot = tmp_path / "loss.png"
    accuracy = quickstart.main(["--epochs", "10", "--seed", "1", "--plot", str(plot)])
    assert accuracy >= 0.95
    assert plot.stat().st_size > 0
    assert plot.read_bytes().startswith(b"\x89PNG")
