"""Shared, non-test code of the suite: pytrees, the algorithm table, torch references, runners.

Test modules import from here (``from helpers.trees import random_tree``), never from each
other; ``tests/`` is on the import path as the folder of the root ``conftest.py``.
"""
