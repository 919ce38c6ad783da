"""Running the examples as the tests do: as scripts, a fresh interpreter each, as a user runs
them; and reading what they print and save."""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def python_command(script: Path, *flags: str, env=None) -> tuple[list[str], dict]:
    """``(argv, env)`` that run the Python file ``script`` with ``flags``, the checkout under
    test first on the path, whatever is installed."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return [sys.executable, str(script), *flags], env


def script_command(script: str, *flags: str, env=None) -> tuple[list[str], dict]:
    """:func:`python_command` of ``examples/<script>``."""
    return python_command(EXAMPLES / script, *flags, env=env)


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 0
    assert path.read_bytes().startswith(b"\x89PNG")


def printed_accuracy(stdout: str) -> float:
    match = re.search(r"^test accuracy: (\d+\.\d)%$", stdout, re.MULTILINE)
    assert match, stdout
    return float(match.group(1)) / 100
