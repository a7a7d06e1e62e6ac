"""Server-side merges: the merge-jobs API (controller, service) and what a worker runs (execute)."""
