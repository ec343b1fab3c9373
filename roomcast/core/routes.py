"""Route patterns: which action answers ``METHOD /path`` (pure; shared by apps and the router).

A pattern is a method and a path of segments: a literal, ``:name`` (one segment, captured), or
a last ``*`` (any rest of the path, empty included, as Sails' ``/foo/*``). Method ``*`` answers
every HTTP method but never the ``CONNECT`` / ``DISCONNECT`` lifecycle hooks. Workers announce
their patterns as strings (``"GET /user/:id"``, :meth:`Route.spec`) so that the router sends a
request only to workers that serve it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

__all__ = ["HOOKS", "MAX_ROUTES", "Route", "parse_route", "path_segments"]

HOOKS = frozenset({"CONNECT", "DISCONNECT"})
MAX_ROUTES = 1000  # per worker announcement: the router keeps no more (a bound on its memory)


def path_segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    method: str
    segments: tuple[str, ...]

    @property
    def spec(self) -> str:
        return f"{self.method} /" + "/".join(self.segments)

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        """The captured path parameters when ``method segments`` matches, else None."""
        if self.method != method and not (self.method == "*" and method not in HOOKS):
            return None
        rest = bool(self.segments) and self.segments[-1] == "*"
        fixed = self.segments[:-1] if rest else self.segments
        if len(segments) < len(fixed) if rest else len(segments) != len(fixed):
            return None
        params: dict[str, str] = {}
        for pattern, value in zip(fixed, segments, strict=False):
            if pattern.startswith(":"):
                params[pattern[1:]] = urllib.parse.unquote(value)
            elif pattern != value:
                return None
        return params


def parse_route(spec: str) -> Route:
    """``"GET /user/:id"`` -> Route; raises ValueError for anything else."""
    method, _, path = spec.strip().partition(" ")
    path = path.strip()
    if not method or not path.startswith("/"):
        raise ValueError(f"not a route (METHOD /path): {spec[:100]!r}")
    return Route(method.upper(), tuple(path_segments(path)))
