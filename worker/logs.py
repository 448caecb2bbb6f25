"""Celery's side of ``jobs.logs``: with ``LORAMERGE_LOG_FORMAT=json`` or ``LORAMERGE_LOG_DIR`` set, a
worker sets up its own logging instead of Celery's (the ``setup_logging`` signal), and each pool
process of a merge worker writes its own file (``<name>.pool<k>.log``), so no two processes rotate one
file. Otherwise Celery's logging is left as it is."""

from __future__ import annotations

import logging

from billiard.process import current_process
from celery.signals import setup_logging, worker_process_init

from jobs.logs import configure_logging, log_name, wants_own_logging
from jobs.settings import Settings


def use_own_logging(settings: Settings, default_name: str) -> None:
    if not wants_own_logging(settings):
        return
    base = log_name(default_name)

    def name() -> str:
        index = getattr(current_process(), "index", None)
        return base if index is None else f"{base}.pool{index}"

    @setup_logging.connect(weak=False)
    def _setup(loglevel=None, **_):
        configure_logging(settings, name(), level=loglevel or logging.INFO)

    @worker_process_init.connect(weak=False)
    def _pool_process(**_):  # after the fork: this process's own file
        configure_logging(settings, name(), level=logging.getLogger().level or logging.INFO)
