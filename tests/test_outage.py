"""Telling an outage from a real error (storage/outage.py)."""

from __future__ import annotations

import optuna
from sqlalchemy.exc import OperationalError

from storage.outage import unreachable, wait_until_back


def _operational():
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def test_an_outage_wrapped_by_optuna_is_an_outage():
    try:
        try:
            raise _operational()
        except OperationalError as e:
            raise optuna.exceptions.StorageInternalError("wrapped") from e
    except optuna.exceptions.StorageInternalError as wrapped:
        assert unreachable(wrapped)
    assert unreachable(ConnectionResetError()) and not unreachable(FileNotFoundError())


def test_an_error_raised_while_waiting_out_an_outage_is_not_one():
    """A study deleted during an outage: the KeyError must end the wait, not prolong it."""
    try:
        try:
            raise _operational()
        except OperationalError:
            raise KeyError("Record does not exist.")
    except KeyError as e:
        assert e.__context__ is not None and not unreachable(e)


def test_wait_until_back_lets_a_real_error_through():
    calls = []

    def probe():
        calls.append(1)
        if len(calls) == 1:
            raise _operational()
        raise KeyError("Record does not exist.")

    try:
        try:
            raise _operational()
        except OperationalError:
            wait_until_back(probe, give_up_s=30)
    except KeyError:
        assert len(calls) == 2
    else:
        raise AssertionError("the KeyError was swallowed")
