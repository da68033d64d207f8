"""A dependency's outage is one clear log line per process, not a traceback per failed call
(issue #14, item 7)."""

from __future__ import annotations

import io
import json
import logging

import redis
import structlog
from sqlalchemy.exc import OperationalError

from config.logging import configure_logging
from config.outages import OutageLines, outage_service
from config.settings import load_settings


def _redis_down() -> redis.exceptions.ConnectionError:
    return redis.exceptions.ConnectionError(
        "Error 111 connecting to 127.0.0.1:6390. Connection refused."
    )


def test_an_outage_is_one_line_and_a_bug_keeps_its_traceback() -> None:
    stream = io.StringIO()
    configure_logging(load_settings({"RAPID_LOG_FORMAT": "json"}), stream=stream)
    try:
        worker = logging.getLogger("dramatiq.worker.WorkerThread")
        consumer = logging.getLogger("dramatiq.worker.ConsumerThread(sms-normal)")
        # Given Redis refusing connections: every worker thread fails, with a traceback each,
        # and every consumer says so in words
        for i in range(5):
            try:
                raise _redis_down()
            except redis.exceptions.ConnectionError:
                worker.error(
                    "Failed to process message %s with unhandled exception.", i, exc_info=True
                )
            consumer.critical("Consumer encountered a connection error: Error 111 connecting")
        # And our own code reporting the same
        structlog.get_logger("run").error(
            "scheduler.failed", error_type="ConnectionError", error="x"
        )
        # And, meanwhile, a bug
        try:
            raise ValueError("a bug")
        except ValueError:
            worker.error("Failed to process message 9 with unhandled exception.", exc_info=True)
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    # Then the outage is one line naming the service and the error, without a traceback
    outage = [e for e in lines if e.get("outage")]
    assert len(outage) == 1, lines
    assert outage[0]["outage"] == "redis" and "Connection refused" in outage[0]["error"]
    assert "exception" not in outage[0]
    # And the bug keeps its traceback
    [bug] = [e for e in lines if "exception" in e]
    assert "ValueError: a bug" in bug["exception"]
    assert len(lines) == 2


def test_a_new_outage_after_a_quiet_while_gets_its_own_line() -> None:
    now = [0.0]
    outages = OutageLines(quiet_s=30, clock=lambda: now[0])

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            "dramatiq", logging.ERROR, "f", 1, "boom", (), (type(exc), exc, None)
        )

    assert outages.filter(record(_redis_down()))
    now[0] = 20
    assert not outages.filter(record(_redis_down()))  # the same outage, still going
    now[0] = 45
    assert not outages.filter(record(_redis_down()))  # 25 s after the last error: still it
    now[0] = 80
    assert outages.filter(record(_redis_down()))  # 35 s of quiet: a new outage
    database = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    assert outages.filter(record(database))  # another service: its own line
    assert outage_service(database) == "database"
    assert outage_service(ValueError("x")) is None
