"""Where one API process spends a metadata read, and old-vs-new A/B runs of the same reads.

``profile``: seeds a registry (one embedded PostgreSQL, ``bench/tiny`` with alias ``prod`` and a read
token), then serves it from *this* interpreter with uvicorn (one process, the options ``serve`` uses)
and, per case, runs ``wrk -t1 -c32`` with cProfile enabled in the server's thread only for that case;
prints the top functions by cumulative and own time and the time spent in garbage collection, and
writes ``.prof`` files for each case.

Cases: the metadata reads of ``bench_metadata.py`` with its URLs (a version by number, alias, commit;
the version list; search ``q=tiny``; Hub ``model_info``; Hub ``resolve`` of the small config), each
anonymous and with the read token (``+token``); ``--only`` picks them by name prefix.

``ab OLD_ROOT``: the same database served by two API processes, one from the source tree ``OLD_ROOT``
(e.g. a worktree of ``main``) and one from this tree, and ``wrk`` alternating between them, case by
case, for ``--rounds`` rounds; prints medians of req/s and p99 and new/old ratios (``--ceiling``: and
the bare ``SELECT 1`` app of ``bench_metadata.py``, twice a round, with every case's ratio to it).

Run: ``.venv/bin/python bench/profile_reads.py profile [--seconds 8] [--out /tmp/prof] [--only search hub]``
     ``.venv/bin/python bench/profile_reads.py ab /work/main [--rounds 5 --seconds 5] [--ceiling] [--only …]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from bench_metadata import Process, database, seed_ours, start_ceiling, start_postgres, wrk  # noqa: E402
from bench_serving import Server, free_port  # noqa: E402

#: The case names of :func:`read_cases` (``--only`` picks among them by prefix).
CASES = ("number", "alias", "commit", "list", "search", "hub info", "hub resolve")


def read_cases(url: str, commit: str, token: str, only: list[str] | None = None
               ) -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (url, headers) of the metadata reads of ``bench_metadata.py`` (the same URLs: search
    ``q=tiny``, the Hub ``resolve`` as a GET of the small config), anonymous and with the read token
    (``+token``); ``only``: the cases whose names start with one of these."""
    v = url + "/api/v1/adapters/bench/tiny/versions"
    urls = dict(zip(CASES, (f"{v}/1", f"{v}/prod", f"{v}/{commit}", v, url + "/api/v1/adapters?q=tiny",
                            url + "/api/models/bench/tiny", url + "/bench/tiny/resolve/main/adapter_config.json"),
                    strict=True))
    tok = {"Authorization": f"Bearer {token}"}
    out = {name + suffix: (u, headers) for suffix, headers in (("", {}), ("+token", tok)) for name, u in urls.items()}
    return {k: v for k, v in out.items() if not only or any(k.startswith(o) for o in only)}


def seeded(root: Path) -> tuple[Any, str, str, str]:
    """An embedded PostgreSQL with a seeded registry database (and an empty one, ``bare``, for the
    ceiling app): (server, registry URL, commit, token); the blobs are under ``root/seed``, which every
    server shares."""
    pg, url = start_postgres(root, ("registry", "bare"))
    db_url = database(url, "registry", "asyncpg")
    server = Server(1, database_url=db_url, data=root / "seed", seed=True, big=False)
    try:
        commit, token = seed_ours(server)
    finally:
        server.stop()
    from registry_service.db.session import apply_migrations

    apply_migrations(db_url)  # this tree's newest migrations (the seeding server may be older code)
    return pg, db_url, commit, token


def profile(args: argparse.Namespace) -> None:
    """cProfile inside one API process served from this interpreter, one ``.prof`` per case."""
    import uvicorn

    from registry_service.logs import log_config
    from registry_service.serving import http_protocol, served_app
    from registry_service.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="profile-reads-"))
    args.out.mkdir(parents=True, exist_ok=True)
    pg, db_url, commit, token = seeded(root)
    port = free_port()
    settings = Settings(database_url=db_url, data_dir=root / "seed", log_level="warning", apply_migrations=False)
    config = uvicorn.Config(served_app(settings), host="127.0.0.1", port=port, http=http_protocol(),
                            log_config=log_config("warning"), server_header=False)
    server = uvicorn.Server(config)
    gc_time = [0.0, 0.0, 0.0]  # seconds in the garbage collector, by generation
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_time[info["generation"]] += time.perf_counter() - gc_started[0]

    gc.callbacks.append(on_gc)

    async def drive() -> None:
        while not server.started:
            await asyncio.sleep(0.1)
        cases = read_cases(f"http://127.0.0.1:{port}", commit, token, args.only)
        async with httpx.AsyncClient() as c:
            for url, headers in cases.values():
                (await c.get(url, headers=headers)).raise_for_status()
        for name, (url, headers) in cases.items():
            await asyncio.to_thread(wrk, url, 2, headers)  # warm
            prof = cProfile.Profile()
            gc_time[:] = [0.0, 0.0, 0.0]
            prof.enable()
            r = await asyncio.to_thread(wrk, url, args.seconds, headers)
            prof.disable()
            print(f"garbage collection by generation, s: {' '.join(f'{t:.3f}' for t in gc_time)}")
            path = args.out / f"{name}.prof"
            prof.dump_stats(path)
            print(f"\n===== {name}: {r['req_s']:.0f} req/s under the profiler (p99 {r['p99_ms']:.0f} ms); {path}")
            stats = pstats.Stats(prof)
            stats.sort_stats("cumulative").print_stats(args.top)
            stats.sort_stats("tottime").print_stats(args.top)
        server.should_exit = True

    async def main() -> None:
        await asyncio.gather(server.serve(), drive())

    try:
        asyncio.run(main())
    finally:
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def serve_from(tree: Path, db_url: str, data: Path) -> Process:
    """``adapter-registry serve`` (one process) with the code of source tree ``tree``."""
    port = free_port()
    code = "import sys; from registry_service.cli import main; sys.argv[0] = 'adapter-registry'; main()"
    cmd = [sys.executable, "-c", code, "serve", "--workers", "1", "--port", str(port), "--data-dir", str(data),
           "--log-level", "warning"]
    env = {"ADAPTER_REGISTRY_DATABASE_URL": db_url, "ADAPTER_REGISTRY_APPLY_MIGRATIONS": "false",
           "PYTHONPATH": str(tree)}
    old = Path.cwd()
    os.chdir(tree)
    try:
        return Process(cmd, "/api/v1/health", env, f"registry-{tree.name}", port)  # /readyz wants its head
    finally:
        os.chdir(old)


def ab(args: argparse.Namespace) -> None:
    """Two API processes on one database, old tree vs this one, wrk alternating between them."""
    root = Path(tempfile.mkdtemp(prefix="ab-reads-"))
    pg, db_url, commit, token = seeded(root)
    trees = {"old": args.old.resolve(), "new": ROOT}
    procs: dict[str, Process] = {}
    try:
        for label, tree in trees.items():
            procs[label] = serve_from(tree, db_url, root / "seed")
        plans = {label: read_cases(p.url, commit, token, args.only) for label, p in procs.items()}
        ceiling = None
        if args.ceiling:
            ceiling = start_ceiling(database(db_url, "bare", "asyncpg"), 1)
            procs["ceiling"] = ceiling
            plans["ceiling"] = {"SELECT 1": (ceiling.url + "/select1", {})}
        for plan in plans.values():
            for url, headers in plan.values():
                httpx.get(url, headers=headers, timeout=30).raise_for_status()
                wrk(url, 1, headers)
        raw: dict[str, dict[str, list[dict[str, float]]]] = {label: {k: [] for k in plans[label]} for label in plans}
        names = list(plans["new"])
        twice = {names[0], names[len(names) // 2]}  # the ceiling twice a round
        for rnd in range(args.rounds):
            for i, case in enumerate(names):
                order = ("old", "new") if (rnd + i) % 2 == 0 else ("new", "old")
                for label in order:
                    url, headers = plans[label][case]
                    raw[label][case].append(wrk(url, args.seconds, headers))
                if ceiling is not None and case in twice:
                    raw["ceiling"]["SELECT 1"].append(wrk(ceiling.url + "/select1", args.seconds, {}))
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        for p in procs.values():
            p.stop()
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    report_ab(raw)


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report_ab(raw: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    """Medians of req/s and p99 (ms) per case, old and new, with the per-round req/s ratios."""
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} cores)")
    print(f"{'case':<18} {'old req/s':>10} {'new req/s':>10} {'new/old':>8} {'old p99':>8} {'new p99':>8}"
          "   per-round new/old req/s; new p99s")
    for case, new in raw["new"].items():
        old = raw["old"][case]
        o, n = _median(old, "req_s"), _median(new, "req_s")
        pairs = " ".join(f"{b['req_s'] / a['req_s']:.2f}" for a, b in zip(old, new, strict=True))
        p99s = " ".join(f"{r['p99_ms']:.0f}" for r in new)
        errors = sum(r["errors"] for r in new + old)
        print(f"{case:<18} {o:>10.0f} {n:>10.0f} {n / o:>8.2f} {_median(old, 'p99_ms'):>8.1f} "
              f"{_median(new, 'p99_ms'):>8.1f}   {pairs}; {p99s}" + (f"  ({errors:.0f} errors)" if errors else ""))
    for case in raw["new"]:
        if case + "+token" in raw["new"]:
            ratio = _median(raw["new"][case + "+token"], "req_s") / _median(raw["new"][case], "req_s")
            print(f"new: {case} with a token / anonymous: {ratio:.2f}")
    if "ceiling" in raw:
        bare = _median(raw["ceiling"]["SELECT 1"], "req_s")
        print(f"ceiling SELECT 1: {bare:.0f} req/s (p99 {_median(raw['ceiling']['SELECT 1'], 'p99_ms'):.0f} ms); "
              "/ ceiling, old and new: " + ", ".join(
                  f"{case} {_median(raw['old'][case], 'req_s') / bare:.2f} "
                  f"{_median(raw['new'][case], 'req_s') / bare:.2f}" for case in raw["new"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("profile")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--top", type=int, default=35)
    p.add_argument("--out", type=Path, default=Path("/tmp/profile-reads"))
    a = sub.add_parser("ab")
    a.add_argument("old", type=Path, help="the source tree to compare with (e.g. a worktree of main)")
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--seconds", type=float, default=5.0)
    a.add_argument("--ceiling", action="store_true", help="also the bare SELECT 1 app (bench/metadata_ceiling.py)")
    for sp in (p, a):
        sp.add_argument("--only", nargs="*", help=f"case name prefixes (of {', '.join(CASES)}; '+token' variants)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install -y wrk")
    profile(args) if args.cmd == "profile" else ab(args)


if __name__ == "__main__":
    main()
