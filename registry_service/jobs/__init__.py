"""Merge jobs on a PostgreSQL-backed queue (procrastinate): the queue, the task, and the worker."""
