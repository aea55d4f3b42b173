"""The Celery worker class of `segbench worker`: a soft shutdown that lets running
runs finish their epoch and go back to the queue.

Celery imports this module (named in worker.queue.broker) only when a worker starts,
so that importing the app does not import celery.apps.worker, and billiard reads
REMAP_SIGTERM after `segbench worker` has set it.
"""

from __future__ import annotations

from celery.apps.worker import Worker

from worker.queue.broker import database_url
from worker.queue.reaper import wait_until_released
from worker.queue.tasks import begin_shutdown


class SoftStopWorker(Worker):
    """Asks running runs to stop after their epoch, then waits for them (at most
    worker_soft_shutdown_timeout seconds) before Celery cancels what is left."""

    def wait_for_soft_shutdown(self):
        begin_shutdown(self.consumer)
        timeout = self.app.conf.worker_soft_shutdown_timeout
        if timeout > 0:
            wait_until_released(database_url(), node=self.hostname, timeout=timeout)
