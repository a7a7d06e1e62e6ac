"""Load a registry database with many adapters, fast (PostgreSQL ``COPY``), for benchmarks at scale.

Defaults: 100,000 adapters × 3 versions (2 files each, alias ``latest``) over 1,000 namespaces and
20 base models. Names, descriptions, tags and methods are drawn from small vocabularies with a fixed
seed, so a text, tag or method filter matches a known share: ``topic`` words 1 in 50, tags 1 in 30
each (2 per adapter), methods LORA 70% / DORA, IA3, LOHA 10% each; 1 adapter in 10 is private.
Rows only: no blobs are written (file rows point at keys that do not exist), so downloads of seeded
versions fail; metadata reads, listings and search work as for real ones.

Run: ``.venv/bin/python bench/seed_metadata.py DATABASE_URL [--adapters 100000] [--versions 3]
[--namespaces 1000] [--base-models 20]`` (a migrated registry database; rows are added to what is there).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import random
import time
from collections.abc import Iterator
from typing import Any

TOPICS = ["chat", "code", "sql", "math", "legal", "medical", "finance", "poetry", "summary", "translate",
          "german", "french", "spanish", "japanese", "korean", "hindi", "arabic", "review", "support", "email",
          "tweet", "story", "recipe", "travel", "sports", "music", "movie", "game", "science", "history",
          "physics", "biology", "chemistry", "news", "weather", "shopping", "fashion", "health", "fitness", "diet",
          "python", "rust", "golang", "java", "shell", "regex", "json", "yaml", "markdown", "latex"]
STYLES = ["helper", "expert", "tutor", "writer", "critic", "bot", "assistant", "tuned", "mini", "pro"]
TAGS = [f"tag{i}" for i in range(30)]
METHODS = ["LORA"] * 7 + ["DORA", "IA3", "LOHA"]


def asyncpg_dsn(url: str) -> str:
    """A plain ``postgresql://`` DSN for asyncpg from any SQLAlchemy-style URL."""
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def adapters(args: argparse.Namespace, first_id: int, base_ids: list[int], now: dt.datetime,
             rnd: random.Random) -> Iterator[tuple[Any, ...]]:
    for i in range(args.adapters):
        topic, style = TOPICS[i % len(TOPICS)], rnd.choice(STYLES)
        base = base_ids[i % len(base_ids)]
        tags = sorted(rnd.sample(TAGS, 2))
        when = now - dt.timedelta(seconds=i * 3)
        yield (first_id + i, f"ns{i % args.namespaces:04d}", f"{topic}-{style}-{i}", base, rnd.choice(METHODS),
               f"A {style} adapter for {topic} tasks (seeded #{i})", tags,
               "private" if i % 10 == 9 else "public", args.versions + 1, when, when)


async def seed(args: argparse.Namespace) -> None:
    import asyncpg

    rnd = random.Random(args.seed)
    conn = await asyncpg.connect(asyncpg_dsn(args.database_url))
    started = time.perf_counter()
    try:
        async with conn.transaction():
            now = dt.datetime.now(dt.UTC)
            await conn.executemany(
                "INSERT INTO namespace (name, kind) VALUES ($1, 'user') ON CONFLICT (name) DO NOTHING",
                [(f"ns{i:04d}",) for i in range(args.namespaces)])
            base_ids = []
            for b in range(args.base_models):
                base_ids.append(await conn.fetchval(
                    "INSERT INTO base_model (namespace, name, signature, fingerprint, architecture, model_type) "
                    "VALUES ('seed', $1, '{}'::jsonb, $2, 'LlamaForCausalLM', 'llama') "
                    "ON CONFLICT (namespace, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                    f"base-{b:02d}", hashlib.sha256(f"seed-base-{b % max(args.base_models // 2, 1)}".encode())
                    .hexdigest()))  # two base models share each fingerprint (compatible adapters span both)
            first = int(await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM adapter"))
            await conn.copy_records_to_table(
                "adapter", records=adapters(args, first, base_ids, now, rnd),
                columns=["id", "namespace", "name", "base_model_id", "method", "description", "tags", "visibility",
                         "next_version", "created_at", "updated_at"])
            first_v = int(await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM adapter_version"))
            config = json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]})
            summary = json.dumps({"parameters": 131072, "tensors": 8})

            def versions() -> Iterator[tuple[Any, ...]]:
                for i in range(args.adapters):
                    for v in range(1, args.versions + 1):
                        vid = first_v + i * args.versions + v - 1
                        commit = hashlib.sha1(f"seed-{first + i}-{v}-{args.seed}".encode()).hexdigest()
                        yield (vid, first + i, v, commit, config, summary, "[]", "seed", now)

            await conn.copy_records_to_table(
                "adapter_version", records=versions(),
                columns=["id", "adapter_id", "version", "commit", "config", "summary", "parents", "created_by",
                         "created_at"])
            total_versions = args.adapters * args.versions

            def files() -> Iterator[tuple[Any, ...]]:
                for n in range(total_versions):
                    sha = hashlib.sha256(f"seed-weights-{first_v + n}".encode()).hexdigest()
                    yield (first_v + n, "adapter_model.safetensors", 524288, sha, f"blobs/sha256/{sha[:2]}/{sha}")
                    yield (first_v + n, "adapter_config.json", 180, "0" * 64, "blobs/sha256/00/seed-config")

            await conn.copy_records_to_table("file", records=files(),
                                             columns=["version_id", "filename", "size", "sha256", "storage_key"])
            await conn.copy_records_to_table(
                "alias", records=((first + i, "latest", first_v + i * args.versions + args.versions - 1, now)
                                  for i in range(args.adapters)),
                columns=["adapter_id", "name", "version_id", "updated_at"])
            for table in ("adapter", "adapter_version"):
                await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                   f"(SELECT max(id) FROM {table}))")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    print(f"seeded {args.adapters} adapters x {args.versions} versions over {args.namespaces} namespaces and "
          f"{args.base_models} base models in {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("database_url")
    ap.add_argument("--adapters", type=int, default=100_000)
    ap.add_argument("--versions", type=int, default=3)
    ap.add_argument("--namespaces", type=int, default=1000)
    ap.add_argument("--base-models", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    asyncio.run(seed(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
