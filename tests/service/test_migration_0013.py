"""Migration 0013 (text search over tags and base model names, indexable): the IMMUTABLE function the
search and its index use, what it answers, and that it goes away again on a downgrade. (The trigram
indexes need ``pg_trgm``, which the embedded PostgreSQL lacks: there they are simply not made.)"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from alembic import command
from registry_testkit import _db_url

from registry_service.db.session import alembic_config, sync_url


def test_tags_text_function_up_and_down(pg_server: Any) -> None:
    name = f"m_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name};")
    url = _db_url(pg_server, name)
    engine = sa.create_engine(sync_url(url))
    try:
        command.upgrade(alembic_config(url), "head")
        with engine.begin() as db:
            volatility = db.execute(sa.text(
                "SELECT provolatile FROM pg_proc WHERE proname = 'adapter_tags_text'")).scalar_one()
            joined = db.execute(sa.text("SELECT adapter_tags_text(ARRAY['chat', 'en']), "
                                        "adapter_tags_text(ARRAY[]::text[]), adapter_tags_text(NULL)")).one()
            trgm = db.execute(sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")).scalar_one()
            indexes = set(db.execute(sa.text("SELECT indexname FROM pg_indexes WHERE indexname IN "
                                             "('ix_adapter_tags_trgm', 'ix_base_model_full_name_trgm')")).scalars())
        assert volatility == "i"  # IMMUTABLE: an index may use it
        assert tuple(joined) == ("chat en", "", None)
        assert indexes == ({"ix_adapter_tags_trgm", "ix_base_model_full_name_trgm"} if trgm else set())
        command.downgrade(alembic_config(url), "0008")
        with engine.begin() as db:
            assert db.execute(sa.text("SELECT count(*) FROM pg_proc WHERE proname = 'adapter_tags_text'")
                              ).scalar_one() == 0
    finally:
        engine.dispose()
        pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")
