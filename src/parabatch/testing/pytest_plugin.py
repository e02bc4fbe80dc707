"""pytest plugin for parabatch (registered through the ``pytest11`` entry point).

Deliberately thin: everything lives in :mod:`parabatch.testing`, which imports no pytest.
It registers nothing yet.
"""

from __future__ import annotations
