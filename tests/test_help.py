"""Every ``--help`` of the command: each option explained with its default, descriptions without
docstring markup, and the accepted names listed where an option takes one."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator

import pytest

from warmserve.cli import SUBCOMMANDS, build_parser
from warmserve.operator.forecast.forecasters import FORECASTERS
from warmserve.operator.kube.operator import OPERATOR_POLICIES
from warmserve.operator.policies.registry import NAMES
from warmserve.worker.timing import GPU_PROFILES, MODEL_SHAPES


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def every_parser() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield from subcommands(build_parser())
    worker_main = importlib.import_module("warmserve.worker.__main__")
    yield from ((f"python -m warmserve.worker {n}", p) for n, p in subcommands(worker_main.build_parser()))


PARSERS = dict(every_parser())


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_default(name: str) -> None:
    parser = PARSERS[name]
    text = parser.format_help()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        shown = action.default not in (None, False, argparse.SUPPRESS)
        if shown and "default" not in action.help:
            assert f"(default: {action.default})" in " ".join(text.split()), action.option_strings[0]
    for markup in (":class:", ":func:", ":meth:", ":data:", "``"):
        assert markup not in text, f"{name} --help shows {markup}"


def test_options_that_take_a_name_list_the_accepted_ones() -> None:
    simulate = " ".join(PARSERS["simulate"].format_help().split())
    assert all(n in simulate for n in NAMES)
    assert all(n in simulate for n in GPU_PROFILES) and all(n in simulate for n in MODEL_SHAPES)
    forecast = " ".join(PARSERS["forecast"].format_help().split())
    assert all(n in forecast for n in FORECASTERS)
    operator = " ".join(PARSERS["operator"].format_help().split())
    assert all(n in operator for n in OPERATOR_POLICIES) and "oracle" not in operator


def test_each_subcommand_alone_is_registered_by_the_module_named_for_it() -> None:
    assert list(dict(subcommands(build_parser()))) == list(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        assert name in dict(subcommands(build_parser(name)))
