"""Prometheus metrics read from Redis at scrape time, so they are right across API replicas and
worker processes: jobs by state, finished totals, run-time histogram, queue depth, live workers, webhook deliveries by outcome, disk use of each worker node's data dir."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from jobs import disk
from jobs.heartbeat import live_processes, live_workers
from jobs.queue import queue_length, waiting_job_ids
from jobs.records import JobStatus
from jobs.settings import Settings
from jobs.store import JobStore
from jobs.webhooks import Outbox

DELIVERY_OUTCOMES = ("succeeded", "failed", "gone")


class JobStoreCollector:
    def __init__(self, store: JobStore, settings: Settings, outbox: Outbox) -> None:
        self.store, self.settings, self.outbox = store, settings, outbox

    def collect(self):
        active = GaugeMetricFamily("loramerge_jobs", "Jobs currently queued or running", labels=["status"])
        for status in (JobStatus.queued, JobStatus.running):
            active.add_metric([status.value], self.store.count(status))
        yield active

        finished = CounterMetricFamily("loramerge_jobs_finished", "Jobs that reached a terminal state", labels=["status"])
        totals = self.store.finished_totals()
        for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            finished.add_metric([status.value], totals.get(status.value, 0))
        yield finished

        duration = HistogramMetricFamily("loramerge_job_duration_seconds", "Run time of finished jobs", labels=["status"])
        for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            buckets, total = self.store.durations(status)
            duration.add_metric([status.value], buckets, total)
        yield duration

        depth = GaugeMetricFamily(
            "loramerge_queue_depth",
            "Queued jobs whose message waits in each queue (the backlog: a job cancelled while queued is not counted)",
            labels=["queue"],
        )
        messages = GaugeMetricFamily(
            "loramerge_queue_messages",
            "Messages in each Celery queue, those of jobs cancelled while queued included (a worker drops them unrun)",
            labels=["queue"],
        )
        queued = self.store.ids_in(JobStatus.queued)
        for queue in (self.settings.gpu_queue, self.settings.cpu_queue):
            depth.add_metric([queue], len(waiting_job_ids(self.store.redis, [queue]) & queued))
            messages.add_metric([queue], queue_length(self.store.redis, queue))
        yield depth
        yield messages

        yield GaugeMetricFamily(
            "loramerge_workers", "Worker nodes with a live heartbeat", value=len(live_workers(self.store.redis))
        )
        processes = live_processes(self.store.redis)
        yield GaugeMetricFamily(
            "loramerge_worker_processes",
            "Worker pool processes with a live heartbeat (a hung process stops beating)",
            value=len(processes),
        )
        devices = GaugeMetricFamily(
            "loramerge_worker_device", "The device each live pool process merges on (1 per process)", labels=["process", "device"]
        )
        memory = GaugeMetricFamily(
            "loramerge_worker_device_memory_bytes",
            "GPU memory of each live pool process's device",
            labels=["process", "device", "kind"],
        )
        for name, beat in sorted(processes.items()):
            device = str(beat.get("device", "unknown"))
            devices.add_metric([name, device], 1)
            for kind in ("free", "total"):
                if f"memory_{kind}" in beat:
                    memory.add_metric([name, device, kind], beat[f"memory_{kind}"])
        yield devices
        yield memory

        yield from _disk_metrics(self.store.redis)

        deliveries = CounterMetricFamily(
            "loramerge_webhook_deliveries", "Webhook deliveries that ended, by outcome (gone: 410)", labels=["outcome"]
        )
        outcomes = self.outbox.outcomes()
        for outcome in DELIVERY_OUTCOMES:
            deliveries.add_metric([outcome], outcomes.get(outcome, 0))
        yield deliveries
        attempts = CounterMetricFamily("loramerge_webhook_attempts", "Webhook delivery attempts, by result", labels=["result"])
        tried = self.outbox.attempts()
        for result in ("ok", "error"):
            attempts.add_metric([result], tried.get(result, 0))
        yield attempts
        yield GaugeMetricFamily(
            "loramerge_webhook_pending", "Webhook deliveries waiting in the outbox", value=self.outbox.pending()
        )


def _disk_metrics(client):
    """Each worker node's data dir as its retention pass last reported it (jobs.disk)."""
    usage = GaugeMetricFamily("loramerge_disk_usage_bytes", "Bytes held in each data dir, by area", labels=["data_dir", "area"])
    free = GaugeMetricFamily("loramerge_disk_free_bytes", "Free bytes of the file system of each data dir", labels=["data_dir"])
    for name, report in sorted(disk.reports(client).items()):
        for area in disk.AREAS:
            if area in report:
                usage.add_metric([name, area], report[area])
        if "free" in report:
            free.add_metric([name], report["free"])
    yield usage
    yield free
    removed = CounterMetricFamily(
        "loramerge_retention_removed", "Folders result retention removed, by area (results, staging, hub_cache)", labels=["area"]
    )
    totals = disk.removed_totals(client)
    for area in disk.AREAS:
        removed.add_metric([area], totals.get(area, 0))
    yield removed


def metrics_registry(store: JobStore, settings: Settings, outbox: Outbox) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobStoreCollector(store, settings, outbox))
    return registry
