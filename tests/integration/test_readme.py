"""README.md runs top to bottom: every ```python block, in order, in one namespace.

A block is left out only where the README says so, visibly in its source, with an HTML comment
on the line before the block: ``<!-- readme-test: skip (reason) -->`` (torch.optim's own code,
shown next to ours for comparison). The blocks run in a subprocess with 8 CPU devices, as the
multi-device snippets need, and ``path`` set to a fresh folder for the orbax checkpoint snippet.
Run as a script (``python tests/integration/test_readme.py README.md PATH``) this module is
that subprocess; tracebacks then point at README lines.
"""

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers import early

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```python\n(?P<code>.*?)^```$", re.DOTALL | re.MULTILINE)
_SKIP = re.compile(r"<!-- readme-test: skip \((?P<reason>[^)]+)\) -->")


class Block(NamedTuple):
    line: int  # of the block's first line of code in the README
    code: str
    skip: str | None  # the reason given by a skip marker, if the block has one


def python_blocks(text: str) -> list[Block]:
    """The README's python blocks in order, each with the reason of its skip marker, if any.

    A marker applies to the block whose fence is the next non-blank line after it.

    Raises:
      ValueError: for a skip marker with no python block right after it, which would otherwise
        skip nothing without anyone noticing.
    """
    blocks, used = [], set()
    for fence in _FENCE.finditer(text):
        before = text[:fence.start()].rstrip()
        marker = _SKIP.search(before, before.rfind("\n") + 1)
        if marker:
            used.add(marker.start())
        blocks.append(Block(text.count("\n", 0, fence.start("code")) + 1, fence["code"],
                            marker["reason"] if marker else None))
    for marker in _SKIP.finditer(text):
        if marker.start() not in used:
            line = text.count("\n", 0, marker.start()) + 1
            raise ValueError(f"README.md:{line}: a skip marker with no python block after it")
    return blocks


def run_blocks(readme: Path, path: str) -> None:
    """Executes the README's python blocks in one namespace, where ``path`` is given."""
    namespace = {"__name__": "__readme__", "path": path}
    for block in python_blocks(readme.read_text()):
        if block.skip:
            print(f"README.md:{block.line}: skipped ({block.skip})")
            continue
        start = time.perf_counter()
        # Padding to the block's line makes tracebacks name README.md lines, and show them.
        exec(compile("\n" * (block.line - 1) + block.code, str(readme), "exec"), namespace)
        print(f"README.md:{block.line}: ran in {time.perf_counter() - start:.1f} s")


def readme_run(folder: str) -> tuple[list[str], dict]:
    """The subprocess that runs the README's blocks in ``folder``."""
    # The checkout under test comes first on the path, whatever is installed (and its tests'
    # helpers, which this module imports); the CPU's 8 devices whatever accelerator the machine
    # has, for the 4x2 mesh of the README.
    path = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"),
                                         os.environ.get("PYTHONPATH")]))
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
    env = {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    return [sys.executable, __file__, str(README), str(Path(folder) / "checkpoint")], env


@early.starts_early(readme_run)
def test_readme_runs_top_to_bottom(request):
    completed = early.succeeded(request.node.nodeid, readme_run)
    text = README.read_text()
    blocks = python_blocks(text)
    assert len(blocks) == text.count("```python\n")  # the parser saw every block
    assert completed.stdout.count(": ran in ") == sum(not block.skip for block in blocks)


def test_requirements_state_the_floors_of_pyproject():
    """The README's floors are pyproject's, so neither drifts from the versions tested."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {*project["dependencies"],
                *(req for extra in project["optional-dependencies"].values() for req in extra)}
    paragraph = README.read_text().split("\nRequirements: ", 1)[1].split("\n\n", 1)[0]
    stated = set(re.findall(r"`([\w-]+>=[\d.]+)`", paragraph))
    assert set(project["dependencies"]) <= stated <= declared
    assert f"Python{project['requires-python']}" in paragraph.replace(" ", "")


def test_only_torch_code_is_skipped():
    for block in python_blocks(README.read_text()):
        if block.skip:
            assert "torch" in block.skip and ".backward()" in block.code, block


def test_a_skip_marker_must_precede_a_block():
    stray = "<!-- readme-test: skip (torch code) -->\n\nprose\n\n```python\nx = 1\n```\n"
    with pytest.raises(ValueError, match="README.md:1: a skip marker with no python block"):
        python_blocks(stray)
    marked = "<!-- readme-test: skip (torch code) -->\n```python\nx = 1\n```\n"
    assert python_blocks(marked) == [Block(3, "x = 1\n", "torch code")]


if __name__ == "__main__":
    run_blocks(Path(sys.argv[1]), sys.argv[2])
