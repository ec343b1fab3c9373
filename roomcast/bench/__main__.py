"""``python -m roomcast.bench SCENARIO ...``: the same as ``roomcast bench SCENARIO ...``."""

from __future__ import annotations

import sys

from roomcast.bench import main

if __name__ == "__main__":
    sys.exit(main())
