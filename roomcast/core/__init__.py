"""Pure shared core of roomcast: wire codec, topology, errors, limits.

Nothing under this package imports zmq, tornado, asyncio or socket, or reads the clock; the shells
(router, gateway, SDK) do the I/O. ``tests/unit/test_purity.py`` proves it.
"""
