"""Server-side merges, one slice from request to result: the API (``controller``, request bodies in
``schemas``), checking, queueing, reading and cancelling jobs (``service``), the queue itself
(``queue``), the lineage of merged versions (``lineage``), and what a worker runs (``execute``). The
worker process (:mod:`registry_service.worker`) imports this package, never the other way round."""
