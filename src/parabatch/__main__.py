"""``python -m parabatch run workflow.json``: see :func:`parabatch.workflow._cli.main`.

Example:
    >>> import io
    >>> from parabatch.workflow._cli import main
    >>> main(["validate", "no-such-file.json"], stderr=io.StringIO())
    2
"""

from __future__ import annotations

import sys

from .workflow._cli import main

if __name__ == "__main__":
    sys.exit(main())
