"""``source.timeout`` on Spark SQL: the statement runs asynchronously and is cancelled at its deadline.

The Thrift Server's own ``spark.sql.thriftServer.queryTimeout`` cancels the
statement's job group, but only the jobs already submitted: a timeout that
strikes while Spark is still planning (a cold server, a loaded machine) misses
them, and the synchronous call PyHive makes returns only when the statement
ends (294 s for a 500 ms timeout, seen in CI). Here driftmon submits each
statement with ``runAsync``, polls its state, and at the deadline sends
CancelOperation and fails the read at once, whatever Spark still does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, event

_DEADLINE = "driftmon.spark_deadline"
_POLL_S = 0.05
_RUNNING = ("INITIALIZED_STATE", "PENDING_STATE", "RUNNING_STATE")


@contextmanager
def deadline(connection: Connection, milliseconds: int) -> Iterator[None]:
    """Every statement of the block must finish within ``milliseconds`` of its start."""
    engine = connection.engine
    if not event.contains(engine, "do_execute", _execute_with_deadline):
        event.listen(engine, "do_execute", _execute_with_deadline)
    connection.info[_DEADLINE] = milliseconds / 1000
    try:
        yield
    finally:
        connection.info.pop(_DEADLINE, None)


def _execute_with_deadline(cursor, statement, parameters, context) -> bool | None:
    seconds = context.root_connection.info.get(_DEADLINE)
    if seconds is None:
        return None  # SQLAlchemy's own execute
    from pyhive.exc import OperationalError
    from TCLIService.ttypes import TOperationState

    running = {getattr(TOperationState, name) for name in _RUNNING}
    ends = time.monotonic() + seconds
    cursor.execute(statement, parameters, async_=True)
    while True:
        status = cursor.poll(get_progress_update=False)
        if status.operationState not in running:
            break
        if time.monotonic() >= ends:
            cursor.cancel()
            raise OperationalError(f"TIMEDOUT: the statement ran past source.timeout ({seconds:g} s) "
                                   "and was cancelled")
        time.sleep(_POLL_S)
    if status.operationState != TOperationState.FINISHED_STATE:
        state = TOperationState._VALUES_TO_NAMES.get(status.operationState, status.operationState)
        raise OperationalError(f"{state}: {status.errorMessage or 'the statement did not finish'}")
    return True
