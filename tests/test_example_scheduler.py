"""examples/train_with_scheduler.py runs end to end and reaches what its docstring promises."""

import sys

import pytest

from test_examples import load_example


@pytest.mark.parametrize("argv", [
    [],
    ["--optimizer", "adamw", "--epochs", "15", "--seed", "1", "--plot", "curves.png"],
], ids=["SGD-defaults", "AdamW-plot"])
def test_one_cycle_training_reaches_95_percent(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where --plot writes
    example = load_example("train_with_scheduler")
    try:
        accuracy = example.main(argv)
    finally:
        del sys.modules[example.__name__]
    assert accuracy >= 0.95
    assert f"test accuracy: {accuracy:.1%}" in capsys.readouterr().out
    if "--plot" in argv:
        assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
