"""Celery workers: fetch sources, run merge_core, publish the result, keep the job record current."""
