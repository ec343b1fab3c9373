"""A second SDK process for integration tests: one asyncio ``roomcast.Cluster`` of its own.

Usage: ``python -m tests.integration.sdk_publisher tcp://127.0.0.1:P`` (from the repo root).
Connects (one ``count`` call), prints
``READY {}``, then reads one JSON command per stdin line, e.g.
``{"op": "broadcast", "args": {"rooms": "r", "event": "e", "data": 1}}``, performs it, and only
after the SDK call returned writes one JSON line: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "<exception class>", "message": "..."}``. Exits 0 on stdin EOF or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any


async def perform(cluster: Any, op: str, args: dict[str, Any]) -> Any:
    if op == "broadcast":
        kw = {"omit": args["omit"]} if "omit" in args else {}
        return await cluster.sockets.broadcast(
            args["rooms"], args.get("event", "message"), args.get("data"), **kw
        )
    raise ValueError(f"unknown op {op!r}")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


async def main(url: str) -> int:
    from roomcast import Cluster

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async with Cluster(url) as cluster:
        await cluster.sockets.count("sdk-publisher-warmup")
        sys.stdout.write("READY {}\n")
        sys.stdout.flush()
        stopping = asyncio.ensure_future(stop.wait())
        while True:
            line_task = asyncio.ensure_future(reader.readline())
            done, _ = await asyncio.wait({line_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if line_task not in done:
                line_task.cancel()
                break
            line = line_task.result()
            if not line:
                break
            cmd = json.loads(line)
            try:
                result = await perform(cluster, cmd["op"], cmd.get("args", {}))
            except Exception as exc:  # reported to the test, which decides
                emit({"ok": False, "error": type(exc).__name__, "message": str(exc)})
            else:
                emit({"ok": True, "result": _jsonable(result)})
        stopping.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
