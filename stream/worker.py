"""Running a worker process: create topics, build the app, hand it to Faust's worker."""

from __future__ import annotations

import asyncio
import logging

import faust
import uvloop

from stream.app import create_app
from stream.broker import create_topics
from stream.config import Settings

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(settings: Settings | None = None) -> int:
    """Run one worker in the foreground until SIGINT/SIGTERM; returns its exit code."""
    settings = settings or Settings.from_env()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    log.info("insession worker starting with %s", settings.redacted())
    # Pre-create topics: a metadata request for an unknown topic would create it with the
    # broker's default partition count, and co-partitioning needs ours.
    create_topics(settings.bootstrap_servers, settings.output_topics())
    worker_app = create_app(settings)
    worker = faust.Worker(
        worker_app.app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        override_logging=False,
    )
    worker.execute_from_commandline()
    return 0
