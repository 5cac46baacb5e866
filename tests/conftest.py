"""Fixtures shared by test folders."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def checkpoint_log() -> Iterator[list[logging.LogRecord]]:
    """Records of frn_det.checkpoint and fvcore's checkpointer (INFO and up) meanwhile."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.INFO)
    loggers = [logging.getLogger("frn_det.checkpoint"), logging.getLogger("fvcore")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield records
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)
