"""Temporary: tests/test_optimizer.py still imports the table from here; it lives in
helpers/algorithms.py. Delete this file when that import changes."""

from helpers.algorithms import ALGORITHMS, GROUP_OPTIONS, VALIDATION, cases  # noqa: F401
