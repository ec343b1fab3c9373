"""The roomcast router: one process that holds the room topology and fans messages out.

A ZeroMQ shell (``server.py``) around the pure :class:`roomcast.core.topology.Topology`, with
Prometheus metrics (``metrics.py``) and a small HTTP server for health and metrics (``http.py``).
Never imports ``gateway``.
"""

__all__: list[str] = []
