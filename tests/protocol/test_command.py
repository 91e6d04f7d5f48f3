"""Errors by what the caller must do: bad input exits 2, a temporary failure 75, never a traceback."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

import pytest

from warmserve.local.processes import ChildError
from warmserve.protocol.command import bounded, run_parsed
from warmserve.protocol.errors import EXIT_INVALID, EXIT_UNAVAILABLE, InvalidFieldError, UnavailableError
from warmserve.worker.pool import PoolExhaustedError, PoolRequestError


def raising(exc: Exception) -> argparse.Namespace:
    def func(args: argparse.Namespace) -> int:
        raise exc

    return argparse.Namespace(func=func)


def test_bad_input_is_one_line_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_parsed(raising(InvalidFieldError("--rate", "a number > 0", -1))) == EXIT_INVALID == 2
    assert capsys.readouterr().err == "warmserve: error: --rate: expected a number > 0, got -1\n"


def test_a_crashed_child_is_unavailable_not_a_typo(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_parsed(raising(ChildError("worker-0 exited with code 1"))) == EXIT_UNAVAILABLE == 75
    assert capsys.readouterr().err == "warmserve: unavailable: worker-0 exited with code 1\n"


def test_pool_errors_are_of_the_kind_the_caller_must_handle() -> None:
    assert isinstance(PoolExhaustedError(2, 1, 4096), UnavailableError)  # memory frees up: retry
    assert not isinstance(PoolRequestError("the host pool is closed"), UnavailableError)  # never


def test_a_subcommand_that_succeeds_keeps_its_exit_code() -> None:
    assert run_parsed(argparse.Namespace(func=lambda args: 0)) == 0


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (bounded(int, 1), "0", "expected an integer >= 1, got '0'"),
        (bounded(float, 0, strict=True), "0", "expected a number > 0, got '0'"),
        (bounded(float, 0, 1, strict=True), "1", "expected a number > 0 and < 1, got '1'"),
        (bounded(float, 0, 1), "1.5", "expected a number >= 0 and <= 1, got '1.5'"),
        (bounded(float, 0, 1), "nan", "expected a number >= 0 and <= 1, got 'nan'"),
        (bounded(int, 0), "two", "expected an integer >= 0, got 'two'"),
    ],
)
def test_bounded_options_refuse_values_outside_their_bounds(
    parse: Callable[[str], float], text: str, expected: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(expected)):
        parse(text)


def test_bounded_options_accept_their_bounds_unless_strict() -> None:
    assert bounded(float, 0, 1)("1") == 1.0
    assert bounded(float, 0, 1, strict=True)("0.5") == 0.5
    assert bounded(int, 1)("3") == 3
