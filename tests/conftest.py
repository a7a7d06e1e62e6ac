"""Shared test setup. Having this file puts ``tests/`` on ``sys.path``, so test packages can
import the shared fixture modules (``s3_fixtures``)."""
