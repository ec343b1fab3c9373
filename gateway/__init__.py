"""The roomcast gateway: a Tornado process that holds client WebSocket connections.

Pure parts: ``plainws`` (the /ws JSON codec), ``frames`` (server WebSocket framing),
``membership`` (local room index), ``sendqueue`` (bounded per-connection queue). Shells:
``upstream`` (ZeroMQ link to the router), ``app`` (Tornado handlers and the delivery hub),
``metrics``. Never imports ``router``.
"""

__all__: list[str] = []
