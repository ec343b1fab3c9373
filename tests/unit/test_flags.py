"""Every flag of every command says what it does, numeric ones in which unit, with the default.

``roomcast.flags.flag_problems`` walks a parser and its subcommands; this runs it over the
parsers of ``roomcast`` (dev included), ``roomcast router``, ``roomcast gateway``, ``roomcast
worker`` and ``roomcast bench`` (all its scenarios). ``tests/integration/test_cli.py`` checks
the same help as printed by the real commands.
"""

from __future__ import annotations

import argparse

import pytest

from roomcast.flags import EnvArgumentParser, flag_problems


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from gateway.__main__ import build_parser as gateway_parser
    from roomcast.bench.baseline import build_parser as baseline_parser
    from roomcast.bench.command import _parser as bench_parser
    from roomcast.cli import _parser as cli_parser
    from roomcast.worker import build_parser as worker_parser
    from router.__main__ import build_parser as router_parser

    return {
        "roomcast": cli_parser(),
        "router": router_parser(),
        "gateway": gateway_parser(),
        "worker": worker_parser(),
        "bench": bench_parser(),
        "baseline": baseline_parser(),
    }


@pytest.mark.parametrize(
    "command", ["roomcast", "router", "gateway", "worker", "bench", "baseline"]
)
def test_every_flag_has_help_a_unit_and_its_default(command: str) -> None:
    parser = _parsers()[command]
    assert flag_problems(parser) == []
    # The defaults are printed by the formatter: every option's help shows one.
    text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help":
            assert action.default is None or "(default:" in text


def test_the_issue_flags_now_say_their_unit() -> None:
    parsers = _parsers()
    helps = {
        (cmd, opt): a.help or ""
        for cmd, p in parsers.items()
        for a in p._actions
        for opt in a.option_strings
    }
    assert "seconds" in helps[("router", "--heartbeat-interval")]
    assert "seconds" in helps[("gateway", "--heartbeat-interval")]
    assert "count" in helps[("router", "--max-rooms-per-socket")]
    assert "bytes" in helps[("gateway", "--max-send-queue-bytes")]
    assert "count" in helps[("worker", "--max-concurrency")]
    for cmd in ("router", "gateway"):
        assert "seconds" in helps[(cmd, "--drain-timeout")]


def _bare(add: dict[str, object]) -> EnvArgumentParser:
    parser = EnvArgumentParser(prog="t", environ={})
    parser.add_argument("--flag", **add)  # type: ignore[arg-type]
    return parser


@pytest.mark.parametrize(
    ("add", "problem"),
    [
        ({}, "t --flag: no help sentence"),
        ({"help": "seconds"}, "t --flag: no help sentence"),  # one word is not a sentence
        ({"type": int, "default": 3, "help": "how many to keep"}, "numeric without a unit"),
        ({"type": float, "default": 1.0, "help": "the interval to use"}, "without a unit"),
    ],
)
def test_problems_are_found(add: dict[str, object], problem: str) -> None:
    found = flag_problems(_bare(add))
    assert len(found) == 1 and problem in found[0]


def test_a_parser_that_hides_defaults_is_found() -> None:
    parser = argparse.ArgumentParser(prog="t")
    parser.add_argument("--flag", type=int, default=3, help="bytes to keep in memory")
    assert flag_problems(parser) == ["t --flag: its default is not shown"]


def test_subcommands_are_walked() -> None:
    parser = EnvArgumentParser(prog="t", environ={})
    sub = parser.add_subparsers(dest="cmd")
    inner = sub.add_parser("inner")
    inner.add_argument("--n", type=int, default=1)
    assert flag_problems(parser) == ["t inner --n: no help sentence"]
