"""The roomcast router: one process that holds the room topology and fans messages out.

A ZeroMQ shell (``server.py``, with ``links.py``, ``publish.py``, ``requests.py`` and
``failover.py`` for its sends, publishing, action requests and pair behaviour) around the pure
:class:`roomcast.core.topology.Topology` and the pure ``history``, ``presence``, ``receipts``,
``workers``, ``queries`` and ``bstar`` modules, with Prometheus metrics (``metrics.py``) and a
small HTTP server for health and metrics (``http.py``). Never imports ``gateway``.
"""

__all__: list[str] = []
