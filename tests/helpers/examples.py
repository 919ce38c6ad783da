"""Running the examples as the tests do: as scripts (a fresh interpreter, as a user runs them)
where the README's command or a setting fixed when JAX starts matters, otherwise in this process
through their ``main(argv)``, which spares each run the imports of a new interpreter."""

import contextlib
import importlib
import os
import re
import sys
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def script_command(script: str, *flags: str, env=None) -> tuple[list[str], dict]:
    """``(argv, env)`` that run ``examples/<script>`` with ``flags``, the checkout under test
    first on the path, whatever is installed."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return [sys.executable, str(EXAMPLES / script), *flags], env


def run_main(script: str, argv: list[str], monkeypatch, capsys):
    """``examples/<script>``'s ``main(argv)`` in this process: (its return value, stdout,
    stderr). The example imports its sibling ``_digits``, so examples/ joins the path."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = importlib.import_module(Path(script).stem)
    returned = example.main(argv)
    captured = capsys.readouterr()
    return returned, captured.out, captured.err


@contextlib.contextmanager
def global_x64_restored():
    """For a module that switches float64 on at import (``jax.config.update``, as a script
    does before creating arrays): the process-wide setting as it was, afterwards."""
    before = jax.config.jax_enable_x64
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 0
    assert path.read_bytes().startswith(b"\x89PNG")


def printed_accuracy(stdout: str) -> float:
    match = re.search(r"^test accuracy: (\d+\.\d)%$", stdout, re.MULTILINE)
    assert match, stdout
    return float(match.group(1)) / 100
