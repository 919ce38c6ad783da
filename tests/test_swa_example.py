"""examples/swa_ema.py in its --fast mode: the last, SWA and EMA weights all score, the three
accuracies are printed and the plot is saved. Run in this process (the example's ``main``), which
spares a fresh interpreter's imports; tests/test_examples.py runs the other examples as scripts."""

import importlib
import re
from pathlib import Path

from test_examples import assert_png

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_swa_ema_example_fast(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the example imports its sibling _digits
    example = importlib.import_module("swa_ema")
    plot = tmp_path / "swa_ema.png"
    returned = example.main(["--fast", "--plot", str(plot)])
    stdout = capsys.readouterr().out
    printed = dict(re.findall(r"^test accuracy, (\S+) weights: (\d+\.\d)%$", stdout, re.MULTILINE))
    assert printed == {name: f"{100 * value:.1f}" for name, value in returned.items()}, stdout
    assert set(returned) == {"last", "SWA", "EMA"}
    assert all(value >= 0.9 for value in returned.values()), returned
    assert f"saved to {plot}" in stdout
    assert_png(plot)
