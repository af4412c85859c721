"""``python -m spotlake_dev.clickgen``; see :mod:`spotlake_dev.clickgen.cli`."""

from __future__ import annotations

import sys

from spotlake_dev.clickgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
