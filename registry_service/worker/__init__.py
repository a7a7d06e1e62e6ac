"""The merge worker process: procrastinate's worker on the registry database, with the merge task
registered (:mod:`.tasks`) and a sweeper for the jobs of dead workers (:mod:`.process`). What a job
does lives in :mod:`registry_service.domain.merge_jobs`; this package only runs it."""
