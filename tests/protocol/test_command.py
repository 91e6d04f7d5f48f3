"""Errors by what the caller must do: bad input exits 2, a temporary failure 75, never a traceback."""

from __future__ import annotations

import argparse

import pytest

from warmserve.local.processes import ChildError
from warmserve.protocol.command import run_parsed
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
