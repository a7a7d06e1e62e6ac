"""Streaming transfers: parallel ranged downloads that resume, parallel multipart uploads,
sha256 verification, and progress bars on a terminal.

Nothing holds a whole file in memory: downloads write each range at its offset in a ``.part``
file and record finished ranges in a ``.part.json`` beside it, so an interrupted download
resumes where it stopped; uploads read each part with ``os.pread``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from ..errors import AdapterError
from . import trust
from .http import RETRY_STATUS, Http, RegistryUnavailable, raise_for_problem
from .trust import UnsafeResponse

CHUNK = 1 << 20
#: Download range size, and parallel ranges: enough streams to fill a link, but on a small machine
#: more threads than about two per core only fight over the GIL (measured in bench/bench_transfers.py).
PART_BYTES = 16 << 20
DOWNLOAD_WORKERS = min(8, max(4, 2 * (os.cpu_count() or 2)))
#: Parallel part uploads.
WORKERS = 8


class IntegrityError(AdapterError):
    """Downloaded bytes do not match their sha256: nothing was cached."""


def show_progress(quiet: bool | None) -> bool:
    """Progress bars only on a terminal, unless asked to be quiet."""
    if quiet is not None:
        return not quiet
    return sys.stderr.isatty() and os.environ.get("ADAPTER_REGISTRY_QUIET", "") in ("", "0")


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool) -> Iterator[tqdm]:
    """A byte progress bar (a no-op bar when disabled)."""
    bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled,
               leave=False)
    try:
        yield bar
    finally:
        bar.close()


def sha256_file(path: Path) -> str:
    """Stream-hash a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(http: Http, path: str, dest: Path, *, size: int, sha256: str, label: str, quiet: bool | None = None,
             part_bytes: int = PART_BYTES, workers: int = DOWNLOAD_WORKERS) -> Path:
    """Download the API file ``path`` to ``dest`` (verified), resuming a previous ``dest.part``.

    Never writes more than ``size`` bytes: a server that sends more than a range asked for is refused."""
    size = trust.size(size)
    part = dest.with_name(dest.name + ".part")
    state_file = dest.with_name(dest.name + ".part.json")
    ranges = [(start, min(start + part_bytes, size) - 1) for start in range(0, size, part_bytes)] or [(0, -1)]
    done: set[int] = set()
    if part.exists() and state_file.exists():
        try:
            saved = json.loads(state_file.read_text())
            if saved.get("sha256") == sha256 and saved.get("part_bytes") == part_bytes:
                done = set(saved.get("done", []))
        except (OSError, ValueError):
            done = set()
    if not done:
        with open(part, "wb") as f:
            f.truncate(size)
    lock = threading.Lock()
    where: dict[str, str] = {}  # the presigned storage URL, once the API has redirected to it
    single = len(ranges) == 1  # one range: hash while writing instead of reading the file again
    hashers = [hashlib.sha256()]

    def record(index: int) -> None:
        with lock:
            done.add(index)
            tmp = state_file.with_name(state_file.name + ".tmp")
            tmp.write_text(json.dumps({"sha256": sha256, "part_bytes": part_bytes, "done": sorted(done)}))
            os.replace(tmp, state_file)

    todo = [i for i in range(len(ranges)) if i not in done and ranges[i][1] >= ranges[i][0]]
    fd = os.open(part, os.O_WRONLY)
    try:
        with progress_bar(size, label, show_progress(quiet)) as bar:
            bar.update(sum(ranges[i][1] - ranges[i][0] + 1 for i in done if i < len(ranges)))

            # the first request learns whether the API redirects to storage; the others start as
            # soon as its answer's headers are in, instead of after its whole range
            learned = threading.Event()

            def fetch(index: int) -> None:
                start, end = ranges[index]
                headers = {"Range": f"bytes={start}-{end}"}
                if index != todo[0]:
                    learned.wait()
                written = 0

                def sink(chunk: bytes | memoryview) -> None:
                    nonlocal written
                    if written + len(chunk) > end - start + 1:  # never write past the range asked for
                        raise UnsafeResponse(f"{label}: the server sent more than the {end - start + 1} bytes "
                                             f"of range {start}-{end} (the file is announced as {size} bytes)")
                    if single:
                        hashers[0].update(chunk)
                    os.pwrite(fd, chunk, start + written)
                    written += len(chunk)
                    bar.update(len(chunk))

                def send() -> httpx.Response:
                    url = where.get("url")
                    client = http.plain if url else http.client
                    return client.send(client.build_request("GET", url or path, headers=headers), stream=True)

                def retry_later(attempt: int) -> None:
                    """After a broken attempt: take its bytes off the bar, then wait, or give up."""
                    bar.update(-written)
                    if attempt >= http.retries:
                        raise RegistryUnavailable(f"download of {label} kept failing") from None
                    http.sleep(attempt)

                for attempt in range(http.retries + 2):
                    written = 0
                    hashers[0] = hashlib.sha256()
                    url = where.get("url")
                    try:
                        if url and http.stdlib_storage(url):
                            read_range_into(url, start, end, size, sink, timeout=http.timeout, label=label)
                            record(index)
                            return
                        response = http.call(send)
                    except (StorageHiccup, ConnectionError, TimeoutError, HTTPException):
                        learned.set()
                        retry_later(attempt)
                        continue
                    except BaseException:
                        learned.set()  # let the others run (and fail) on their own
                        raise
                    try:
                        if response.status_code in (301, 302, 303, 307, 308):  # S3: follow without our token
                            try:
                                location = response.headers.get("location")
                                if not location:
                                    raise UnsafeResponse(f"{label}: the registry redirected the download nowhere")
                                where["url"] = trust.storage_url(http.base_url, str(response.url.join(location)))
                            finally:
                                learned.set()  # refused or not: the other ranges must not wait for ever
                            continue
                        learned.set()
                        raise_for_problem(response)
                        if response.status_code != 206 and not (start == 0 and end == size - 1):
                            raise AdapterError(f"the server ignored the Range request for {label}")
                        # no content coding (the usual case for storage): raw reads skip httpx's
                        # decoder and re-chunking, which costs a third of the download time here
                        coded = response.headers.get("content-encoding", "identity") not in ("", "identity")
                        for chunk in response.iter_bytes(CHUNK) if coded else response.iter_raw():
                            sink(chunk)
                        if written != end - start + 1:
                            raise httpx.ReadError(f"short read: {written} of {end - start + 1} bytes")
                        record(index)
                        return
                    except httpx.TransportError:
                        retry_later(attempt)
                    finally:
                        response.close()

            if len(todo) > 1 and workers > 1:
                # hash in file order while later ranges are still downloading
                digest = hashlib.sha256()
                rfd = os.open(part, os.O_RDONLY)
                try:
                    with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                        futures = {i: pool.submit(fetch, i) for i in todo}
                        for i, (start, end) in enumerate(ranges):
                            if i in futures:
                                futures[i].result()
                            for off in range(start, end + 1, CHUNK):
                                digest.update(os.pread(rfd, min(CHUNK, end + 1 - off), off))
                finally:
                    os.close(rfd)
                hashers[0] = digest
                streamed = True
            else:
                for i in todo:
                    fetch(i)
                streamed = single and bool(todo)
    finally:
        os.close(fd)
    got = hashers[0].hexdigest() if streamed else sha256_file(part)
    if got != sha256:
        part.unlink(missing_ok=True)
        state_file.unlink(missing_ok=True)
        raise IntegrityError(f"{label}: downloaded bytes have sha256 {got}, expected {sha256}; nothing was cached")
    os.replace(part, dest)
    state_file.unlink(missing_ok=True)
    return dest


class StorageHiccup(Exception):
    """A storage read that may work when tried again (a 429/5xx answer or a short body)."""


def read_range_into(url: str, start: int, end: int, size: int, sink: Callable[[memoryview], None], *,
                    timeout: float, label: str) -> None:
    """GET bytes ``start..end`` of a presigned storage URL with the standard library and pass them to
    ``sink`` in order. ``readinto`` one reused buffer: on a small machine this reads a 256 MiB file
    about a quarter faster than httpx's 64 KiB pieces (measured in bench/bench_transfers.py)."""
    conn, target = _connect(url, timeout)
    try:
        conn.request("GET", target, headers={"Range": f"bytes={start}-{end}", "User-Agent": "adapter-hub-sdk"})
        response = conn.getresponse()
        if response.status in RETRY_STATUS:
            raise StorageHiccup(f"storage answered {response.status}")
        if response.status >= 400:
            raise AdapterError(f"storage refused the download of {label}: {response.status} {response.reason} "
                               f"{response.read(300).decode(errors='replace')}")
        if response.status != 206 and not (start == 0 and end == size - 1):
            raise AdapterError(f"the server ignored the Range request for {label}")
        buffer = memoryview(bytearray(CHUNK))
        got = 0
        while n := response.readinto(buffer):
            sink(buffer[:n])
            got += n
        if got != end - start + 1:
            raise StorageHiccup(f"short read: {got} of {end - start + 1} bytes")
    finally:
        conn.close()


def _connect(url: str, timeout: float) -> tuple[HTTPConnection, str]:
    """A connection to ``url``'s host (TLS for https) and the request target (path and query)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        conn: HTTPConnection = HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=_tls())
    else:
        conn = HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    return conn, parts.path + (f"?{parts.query}" if parts.query else "")


def _put_part(http: Http, url: str, data: bytes) -> str:
    """PUT one part to a presigned storage URL with the standard library (one write of the whole
    part; about a tenth faster than httpx here), retrying 429/5xx and dropped connections; its ETag."""
    for attempt in range(http.retries + 1):
        conn, target = _connect(url, http.timeout)
        try:
            conn.request("PUT", target, body=data, headers={"Content-Length": str(len(data)),
                                                            "User-Agent": "adapter-hub-sdk"})
            response = conn.getresponse()
            body = response.read(1 << 16)  # only an error message needs it (the connection is not reused)
            if response.status < 300 and response.getheader("etag"):
                return str(response.getheader("etag"))
            if response.status not in RETRY_STATUS:
                raise AdapterError(f"storage refused an upload part: {response.status} {response.reason} "
                                   f"{body[:300].decode(errors='replace')}")
        except (ConnectionError, TimeoutError, HTTPException):
            pass
        finally:
            conn.close()
        if attempt < http.retries:
            http.sleep(attempt)
    raise RegistryUnavailable(f"uploading a part to storage kept failing ({url.split('?')[0]})")


@functools.cache
def _tls() -> ssl.SSLContext:
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def upload_parts(http: Http, session: dict, path: Path, *, quiet: bool | None = None,
                 workers: int = WORKERS) -> list[list]:
    """PUT every part of an upload session in parallel; returns ``[[part_number, etag], …]``.

    Part URLs of a direct session are storage URLs and go without the token; the others must lie on
    the registry's own origin (checked here, before any byte is sent)."""
    size = path.stat().st_size
    part_size, listed = trust.parts(session, size)
    direct = bool(session.get("direct"))
    urls = {n: trust.storage_url(http.base_url, url) if direct else trust.registry_url(http.base_url, url)
            for n, url in listed.items()}
    fd = os.open(path, os.O_RDONLY)
    try:
        with progress_bar(size, f"uploading {path.name}", show_progress(quiet)) as bar:

            def put(p: dict) -> list:
                n = int(p["part_number"])
                url = urls[n]
                offset = (n - 1) * part_size
                length = min(part_size, size - offset)
                data = os.pread(fd, length, offset)

                def send() -> httpx.Response:
                    return http.fetch("PUT", url, plain=direct, content=data)

                if direct and http.stdlib_storage(url):
                    etag = _put_part(http, url, data)
                else:
                    response = http.call(send)
                    raise_for_problem(response)
                    etag = response.headers.get("etag")
                    if not etag:
                        raise UnsafeResponse(f"the registry accepted part {n} of {path.name} without an ETag")
                bar.update(length)
                return [n, etag]

            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(session["parts"])))) as pool:
                return list(pool.map(put, session["parts"]))
    finally:
        os.close(fd)
