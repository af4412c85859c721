"""``python -m spotlake.clickgen``; see :mod:`spotlake.clickgen.cli`."""

from __future__ import annotations

import sys

from spotlake.clickgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
