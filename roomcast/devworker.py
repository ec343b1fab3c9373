"""``roomcast dev``'s worker child: ``roomcast worker`` that first says which hooks its app has.

``python -m roomcast.devworker MODULE:APP [worker flags]`` imports the app (from the current
directory first, as ``roomcast worker`` does), prints one ``HOOKS {"connect": bool,
"disconnect": bool}`` line on stdout, then serves exactly like ``roomcast worker``. ``roomcast
dev`` reads the line to start its gateways with the hooks the apps define
(``@app.on_connect`` / ``@app.on_disconnect``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from roomcast.app import CONNECT, DISCONNECT
from roomcast.worker import load_app
from roomcast.worker import main as worker_main

__all__ = ["hooks_of", "main"]


def hooks_of(spec: str) -> dict[str, bool]:
    """Which lifecycle hooks the app ``spec`` (MODULE:APP) defines."""
    methods = {method for method, path in load_app(spec).routes if path == "/"}
    return {"connect": CONNECT in methods, "disconnect": DISCONNECT in methods}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        sys.stdout.write("HOOKS " + json.dumps(hooks_of(args[0])) + "\n")
        sys.stdout.flush()
    return worker_main(args)


if __name__ == "__main__":
    sys.exit(main())
