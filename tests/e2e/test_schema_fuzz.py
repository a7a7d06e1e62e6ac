"""The OpenAPI schema tells the truth, and stays so: schemathesis generates requests for every
operation of the schema the live service publishes (valid and invalid ones) and checks every
answer: no server error, only documented statuses and content types, bodies that match their
documented schemas. It runs against a registry of its own on the embedded default, with an admin
token (so that writes get past authorization) and a little real content (``hostile_kit``).

Bounded for CI: a fixed seed, a fixed number of examples per operation, one worker, no example
database; about 1,700 requests in under two minutes here. Nothing is excluded: every operation is fuzzed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from hostile_kit import Seeded

HERE = Path(__file__).parent
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXAMPLES = int(os.environ.get("REGISTRY_FUZZ_EXAMPLES", "10"))


def schemathesis_cli() -> str:
    """The ``st`` command of this environment."""
    return str(Path(sys.executable).with_name("st"))


def test_schema_fuzzing_finds_no_server_error_and_no_schema_violation(seeded: Seeded, tmp_path: Path) -> None:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [schemathesis_cli(), "run", f"{seeded.url}/schema/openapi.json",
           "--header", f"Authorization: Bearer {seeded.server.admin}",
           "--checks", CHECKS, "--phases", "examples,coverage,fuzzing",
           "--max-examples", str(EXAMPLES), "--seed", "20261203", "--generation-database", "none",
           "--workers", "1", "--request-timeout", "30", "--continue-on-failure", "--no-color",
           "--suppress-health-check", "all"]
    started = time.monotonic()
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.monotonic() - started
    out = run.stdout + run.stderr
    summary = out[out.rfind("SUMMARY"):] if "SUMMARY" in out else out[-3000:]
    generated = re.search(r"(\d+) generated", out)
    print(f"schemathesis: {generated.group(1) if generated else '?'} test cases in {elapsed:.0f}s")
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    assert selected and selected.group(1) == selected.group(2), summary  # every operation of the schema
    assert f"Tested: {selected.group(2)}" in out and "Errored" not in summary, summary
    assert run.returncode == 0, out[-20000:]
