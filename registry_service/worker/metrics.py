"""Prometheus metrics of a merge worker, served on ``ADAPTER_REGISTRY_WORKER_METRICS_PORT`` when it is
set (each worker process has its own port; scrape them all).

- ``adapter_registry_merge_job_duration_seconds{outcome}``: one observation per run of a job, by how
  the run ended (succeeded, failed, cancelled, retried when the queue runs it again, skipped when
  there was nothing to do); its ``_count`` counts the outcomes.
- ``adapter_registry_worker_jobs_running``: jobs this worker is running now.
- ``adapter_registry_gc_removed_blobs_total``: blobs the periodic blob collection removed.
- ``adapter_registry_gc_removed_total{kind}``: everything it removed, by kind (blobs, staged objects,
  multipart uploads, expired and stuck upload sessions).
- ``adapter_registry_webhook_deliveries_total{outcome}``: webhook delivery attempts by outcome
  (delivered, retried, failed, and gone/skipped when there was nothing to send).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from ..settings import WorkerSettings

PREFIX = "adapter_registry"

#: Merge jobs take seconds to tens of minutes.
JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: How a run ends: the job's final state, "retried" (an error the queue retries, or the worker stopping
#: under it), or "skipped" (already finished or cancelled when the run began).
OUTCOMES = ("succeeded", "failed", "cancelled", "retried", "skipped")

JOB_SECONDS = Histogram(f"{PREFIX}_merge_job_duration_seconds", "Duration of merge job runs, by outcome",
                        ["outcome"], buckets=JOB_BUCKETS)
JOBS_RUNNING = Gauge(f"{PREFIX}_worker_jobs_running", "Merge jobs this worker process is running now")
GC_REMOVED = Counter(f"{PREFIX}_gc_removed_blobs", "Blobs removed by the periodic blob collection")
GC_REMOVED_BY_KIND = Counter(f"{PREFIX}_gc_removed", "What the blob collection removed, by kind", ["kind"])
WEBHOOK_DELIVERIES = Counter(f"{PREFIX}_webhook_deliveries", "Webhook delivery attempts, by outcome", ["outcome"])
for _outcome in OUTCOMES:  # every outcome shows from the start, at 0
    JOB_SECONDS.labels(_outcome)


def serve_metrics(worker: WorkerSettings) -> None:
    """Start the metrics HTTP server in a background thread, if the settings name a port."""
    if worker.metrics_port is not None:
        start_http_server(worker.metrics_port, addr=worker.metrics_host)


__all__ = ["GC_REMOVED", "GC_REMOVED_BY_KIND", "JOBS_RUNNING", "JOB_SECONDS", "OUTCOMES", "WEBHOOK_DELIVERIES",
           "serve_metrics"]
