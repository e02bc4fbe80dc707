"""The pytest plugin's former home, kept so ``-p parabatch.testing.pytest_plugin`` still works.

The plugin is the top-level module ``_parabatch_pytest`` (the ``pytest11`` entry point
``parabatch``), which imports nothing heavy when pytest loads it; this module re-exports
it. Loading it through here imports ``parabatch`` and ``parabatch.testing`` first.

Example:
    >>> from parabatch.testing.pytest_plugin import MARKER
    >>> MARKER
    'parabatch_verify'
"""

from __future__ import annotations

from _parabatch_pytest import HYPOTHESIS_EXTRA as HYPOTHESIS_EXTRA
from _parabatch_pytest import MARKER as MARKER
from _parabatch_pytest import pytest_configure as pytest_configure
from _parabatch_pytest import verify_batch_node as verify_batch_node

__all__ = ["HYPOTHESIS_EXTRA", "MARKER", "pytest_configure", "verify_batch_node"]
