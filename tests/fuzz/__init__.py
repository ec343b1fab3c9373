"""Property-based fuzzing (hypothesis) of every input surface, against real processes.

Targets: ``/ws`` frames, ``/socket.io/`` packets, the router's command socket, a gateway's SUB
stream (against a fake router), and the pure codecs. ``ROOMCAST_FUZZ_EXAMPLES`` is the number of
cases per target (default 10,000, a few hundred hypothesis examples of 30-50 cases each; about
a minute and a half for the whole tier on 2 cores). A longer run on demand::

    ROOMCAST_FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest tests/fuzz -s

See ``tests/fuzz/support.py``.
"""
