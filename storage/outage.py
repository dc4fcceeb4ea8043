"""Telling a storage that is briefly away from a real error, and waiting for it."""

from __future__ import annotations

import sys
import time

# Where the storage's own I/O happens: an OSError raised in there is the storage's (a journal
# on a network filesystem); raised anywhere else (the scratch directory, a checkpoint, an
# archive, a directory artifact store) it is a local error of the trial, however it looks.
STORAGE_MODULES = ("optuna.storages", "sqlalchemy", "psycopg", "grpc", "storage.claim_lock")


def unreachable(error: BaseException) -> bool:
    """The database, the coordinator or the journal's filesystem could not be reached: worth waiting for."""
    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout  # every connection busy: a busy database, not a bug

    while error is not None:
        if _grpc_unavailable(error):  # the coordinator, or the database behind it
            return True
        if isinstance(error, (OperationalError, InterfaceError, PoolTimeout, ConnectionError, TimeoutError)):
            return True
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and raised_by_storage(error):
            return True
        # Only the explicit cause (Optuna wraps the driver's error `from` it): an error raised
        # while handling an outage, such as the KeyError of a study deleted meanwhile, is no outage.
        error = error.__cause__
    return False


def raised_by_storage(error: BaseException) -> bool:
    """Whether the storage's code raised it (a frame of its traceback is in STORAGE_MODULES)."""
    tb = error.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith(STORAGE_MODULES):
            return True
        tb = tb.tb_next
    return False


def _grpc_unavailable(error: BaseException) -> bool:
    grpc = sys.modules.get("grpc")  # imported only by storages behind a coordinator
    return grpc is not None and isinstance(error, grpc.RpcError) and hasattr(error, "code") and \
        error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def wait_until_back(probe, give_up_s: float, should_stop=lambda: False) -> bool:
    """Calls probe() with a backoff of 1 s doubling to 30 s until it passes (True),
    the time is up or should_stop() (False). Other errors than an outage propagate."""
    delay, deadline = 1.0, time.time() + give_up_s
    while not should_stop() and time.time() < deadline:
        time.sleep(min(delay, max(0.0, deadline - time.time())))
        try:
            probe()
            return True
        except Exception as e:
            if not unreachable(e):
                raise
        delay = min(2 * delay, 30.0)
    return False
