"""Issue 19's migration on a database with data: versions published before it get their serving report (from
config and summary), their base revision, and each existing alias one history row."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa
from alembic import command
from registry_testkit import _db_url

from registry_service.db.session import alembic_config, sync_url


def test_existing_versions_and_aliases_are_backfilled(pg_server: Any) -> None:
    name = f"m_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name};")
    url = _db_url(pg_server, name)
    try:
        command.upgrade(alembic_config(url), "0005")
        engine = sa.create_engine(sync_url(url))
        with engine.begin() as db:
            base = db.execute(sa.text("INSERT INTO base_model (namespace, name, revision, signature, fingerprint) "
                                      "VALUES ('meta', 'llama', 'rev-1', '{}', 'f') RETURNING id")).scalar_one()
            adapter = db.execute(sa.text("INSERT INTO adapter (namespace, name, base_model_id, method, description, "
                                         "tags, visibility, next_version) VALUES ('alice', 'x', :b, 'LORA', '', "
                                         "'{}', 'public', 3) RETURNING id"), {"b": base}).scalar_one()
            ids = []
            for number, config in ((1, {"peft_type": "LORA", "r": 8, "lora_alpha": 16}),
                                   (2, {"peft_type": "LORA", "r": 8, "use_dora": True})):
                ids.append(db.execute(sa.text(
                    "INSERT INTO adapter_version (adapter_id, version, commit, config, summary, parents) VALUES "
                    "(:a, :n, :c, CAST(:cfg AS jsonb), CAST(:s AS jsonb), '[]') RETURNING id"),
                    {"a": adapter, "n": number, "c": f"{number:040d}", "cfg": json.dumps(config),
                     "s": json.dumps({"r": 8, "targets": ["q_proj", "v_proj"]})}).scalar_one())
            for alias, vid in (("latest", ids[1]), ("prod", ids[0])):
                db.execute(sa.text("INSERT INTO alias (adapter_id, name, version_id) VALUES (:a, :n, :v)"),
                           {"a": adapter, "n": alias, "v": vid})
        command.upgrade(alembic_config(url), "head")
        with engine.begin() as db:
            rows = db.execute(sa.text("SELECT version, serves, max_lora_rank, base_revision, serving "
                                      "FROM adapter_version ORDER BY version")).all()
            moves = db.execute(sa.text("SELECT alias, version, commit FROM alias_move ORDER BY alias")).all()
        engine.dispose()
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(1, ["vllm", "sglang", "tgi", "llama.cpp"], 8, "rev-1"),
                                                            (2, [], None, "rev-1")]
        assert "DoRA" in rows[1][4]["engines"]["vllm"]["reason"]
        assert [tuple(m) for m in moves] == [("latest", 2, f"{2:040d}"), ("prod", 1, f"{1:040d}")]
        command.downgrade(alembic_config(url), "0005")  # and back
    finally:
        pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")
