"""``python -m hdfsspec.cli``: the ``hdfsspec`` command."""

from __future__ import annotations

import sys

from hdfsspec.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
