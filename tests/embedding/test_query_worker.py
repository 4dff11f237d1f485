"""The query-embedding worker: bits equal to the local path, one per model, private, short-lived.

The rest of the suite runs with the worker turned off (conftest); the tests here start real
worker processes in short private directories and stop every one of them on teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import memstore
from memstore.embedding import BUNDLED_MODEL_ID, FastEmbedder
from memstore.embedding import query_worker as qw
from memstore.embedding.onnx_query import OnnxQueryEncoder

pytestmark = pytest.mark.skipif(not qw.supported(), reason="no Unix sockets here")

TEXTS = [
    "which database did we pick?",
    "Ünïcödé, 中文 and emoji 🎉 in one query",
    "x",
    "long query " * 300,  # beyond the 256-token limit: truncated the same way
]


def wait_for(condition: Callable[[], bool], what: str, log: Path | None = None,
             limit: float = 180.0) -> None:
    """Poll until ``condition()`` holds (the limit only stops a hung test; it asserts nothing
    about speed)."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            detail = log.read_text() if log is not None and log.exists() else "(no log)"
            pytest.fail(f"gave up waiting for {what}; worker log:\n{detail}")
        time.sleep(0.05)


class Workers:
    """Clients made by a test; on teardown every worker they started is stopped and reaped."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.clients: list[qw.QueryWorkerClient] = []
        self.processes: list[subprocess.Popen] = []

    def client(self, model_dir: Path, model_id: str = BUNDLED_MODEL_ID, idle: float = 60,
               **kwargs) -> qw.QueryWorkerClient:
        kwargs.setdefault("directory", self.directory)
        client = qw.QueryWorkerClient(model_id, model_dir, 384, idle, **kwargs)
        self.clients.append(client)
        return client

    def started(self) -> list[subprocess.Popen]:
        return [c.process for c in self.clients if c.process is not None] + self.processes

    def serving(self, client: qw.QueryWorkerClient) -> None:
        wait_for(lambda: client.embed("ping") is not None, "the worker to serve", client.paths.log)


@pytest.fixture
def workers() -> Iterator[Workers]:
    # Short and private: a socket path must stay under ~100 bytes.
    directory = Path(tempfile.mkdtemp(prefix="mqw-"))
    pool = Workers(directory)
    try:
        yield pool
    finally:
        for model_id in {c.model_id for c in pool.clients}:
            qw.stop_worker(model_id, directory)
        for proc in pool.started():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    assert all(p.returncode is not None for p in pool.started())  # nothing leaked


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a killed worker leaves it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


@pytest.mark.real_model
def test_worker_serves_the_local_bits_one_per_model_and_refuses_others(real_embedder, workers):
    model_dir = real_embedder.model_dir
    local = OnnxQueryEncoder(model_dir)
    expected = [local.encode(t).astype("<f4").tobytes() for t in TEXTS]
    fastembed = real_embedder._load()
    assert expected[0] == np.asarray(next(iter(fastembed.query_embed(TEXTS[0]))), "<f4").tobytes()

    client = workers.client(model_dir)
    assert client.embed(TEXTS[0]) is None and client.absent  # nothing runs yet
    assert client.start()
    assert not client.start()  # one start per client
    assert not workers.client(model_dir).start()  # a start is claimed: no second one
    rival = workers.client(model_dir)
    rival._spawn()  # a racing start: the lock keeps it out
    workers.serving(client)
    pids = {p.pid for p in workers.started()}
    assert qw.worker_pid(BUNDLED_MODEL_ID, workers.directory) in pids
    losers = [p for p in workers.started() if p.pid != qw.worker_pid(BUNDLED_MODEL_ID, workers.directory)]
    assert len(losers) == 1 and losers[0].wait(timeout=60) == 0

    assert stat.S_IMODE(os.stat(workers.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(client.paths.socket).st_mode) == 0o600
    assert not client.paths.spawn.exists()  # the claim is dropped once the worker serves
    assert [client.embed(t) for t in TEXTS] == expected
    many = TEXTS * 4
    with ThreadPoolExecutor(8) as pool:  # concurrent clients
        assert list(pool.map(client.embed, many)) == [expected[TEXTS.index(t)] for t in many]

    other = workers.client(model_dir, model_id="custom:another-model:0")
    other.paths.socket = client.paths.socket  # even at its socket, another model is refused
    assert other.embed(TEXTS[0]) is None and not other.absent
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # garbage is refused
        sock.connect(str(client.paths.socket))
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        magic, status, size = qw.RESPONSE.unpack(qw._recv_exact(sock, qw.RESPONSE.size))
    assert (magic, status, size) == (qw.MAGIC, qw.BAD_REQUEST, 0)

    assert qw.stop_worker(BUNDLED_MODEL_ID, workers.directory)  # SIGTERM: it cleans up
    assert client.process.wait(timeout=60) == 0
    assert not client.paths.socket.exists() and not client.paths.lock.exists()
    assert client.embed(TEXTS[0]) is None and client.absent


@pytest.mark.real_model
def test_worker_replaces_a_stale_socket_and_exits_when_idle(real_embedder, workers):
    client = workers.client(real_embedder.model_dir, idle=1)
    client.paths.directory.chmod(0o700)
    stale_socket(client.paths.socket)
    assert client.embed(TEXTS[0]) is None and client.absent  # refused: nobody listens
    assert client.start()
    assert client.process.wait(timeout=180) == 0  # served, then idle for 1 s
    log = client.paths.log.read_text()
    assert "serving" in log and "exiting: idle for 1 s" in log
    assert sorted(p.name for p in workers.directory.iterdir()) == ["worker.log"]


def test_a_worker_that_cannot_start_leaves_nothing_and_is_not_retried_at_once(tmp_path, workers):
    client = workers.client(tmp_path / "no-model-here")
    assert client.embed("q") is None and client.absent
    assert client.start()
    assert client.process.wait(timeout=180) == 1
    assert "cannot serve" in client.paths.log.read_text()
    assert not client.paths.socket.exists() and not client.paths.lock.exists()
    assert not workers.client(tmp_path / "no-model-here").start()  # backs off
    os.utime(client.paths.spawn, (time.time() - qw.SPAWN_BACKOFF - 1,) * 2)
    retry = workers.client(tmp_path / "no-model-here")
    assert retry.start()  # the claim is old: one more try
    assert retry.process.wait(timeout=180) == 1


def test_a_directory_open_to_others_is_not_used(tmp_path, workers):
    workers.directory.chmod(0o755)
    client = workers.client(tmp_path / "model")
    stale_socket(client.paths.socket)
    assert client.embed("q") is None and not client.absent
    assert not client.start() and client.process is None


def test_worker_off_when_disabled_or_unsupported(tmp_path, monkeypatch):
    assert FastEmbedder(tmp_path, "m", 384).query_worker is None
    assert FastEmbedder(tmp_path, "m", 384, query_worker_idle=0).query_worker is None
    embedder = FastEmbedder(tmp_path, "m", 384, query_worker_idle=5)
    assert embedder.query_worker is not None
    embedder.query_worker.paths = qw._Paths(tmp_path / "qw", "m")
    assert embedder.query_worker_status().startswith("not running")
    assert FastEmbedder(tmp_path, "m", 384).query_worker_status() is None
    monkeypatch.setattr(qw, "supported", lambda: False)
    assert FastEmbedder(tmp_path, "m", 384, query_worker_idle=5).query_worker is None
    long_dir = tmp_path / ("d" * 120)
    client = qw.QueryWorkerClient("m", tmp_path, 384, 5, directory=long_dir)
    assert not client.usable and client.embed("q") is None and not client.start()
    monkeypatch.setenv("MEMSTORE_EMBEDDER", "hash")
    with memstore.open(tmp_path / "s") as s:  # the setting reaches the embedder; 0 from conftest
        assert s.settings["query_worker.idle_seconds"] == 0


@pytest.mark.real_model
def test_a_fresh_recall_uses_the_worker_started_by_the_one_before(tmp_path, real_embedder,
                                                                   model_cache, workers):
    cache = Path(tempfile.mkdtemp(prefix="mqc-"))  # short: the socket lives in the cache dir
    try:
        (cache / "models").symlink_to(model_cache / "models")
        (cache / "query-models").symlink_to(model_cache / "query-models")
        env = {"MEMSTORE_HOME": str(tmp_path / "h"), "MEMSTORE_CACHE_DIR": str(cache),
               "MEMSTORE_CONFIG": str(tmp_path / "none.toml"), "HOME": str(tmp_path),
               "PATH": "/usr/bin:/bin", "MEMSTORE_QUERY_WORKER_IDLE_SECONDS": "120"}
        code = (
            "import sys, memstore\n"
            "with memstore.open() as s:\n"
            "    if sys.argv[1] == 'capture':\n"
            "        s.capture('We chose PostgreSQL for JSONB')\n"
            "        sys.exit(0)\n"
            "    hits = s.recall(sys.argv[2])\n"
            "    vector = s.embedder.embed_query(sys.argv[2])\n"
            "print(hits[0].vector_rank, vector.astype('<f4').tobytes().hex(),"
            " [m for m in ('onnxruntime', 'tokenizers') if m in sys.modules])\n"
        )

        def run(*args: str) -> list[str]:
            out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                                 text=True, timeout=300)
            assert out.returncode == 0, out.stderr
            return out.stdout.split(" ", 2)

        run("capture", "")  # loads fastembed: no worker is needed, none is started
        assert qw.worker_pid(BUNDLED_MODEL_ID, cache / qw.DIR_NAME) is None
        first = run("recall", "which database did we pick?")
        assert first[0] == "1" and first[2].strip() == "['onnxruntime', 'tokenizers']"  # local
        client = workers.client(real_embedder.model_dir, directory=cache / qw.DIR_NAME)
        workers.serving(client)  # the first recall started it
        pid = qw.worker_pid(BUNDLED_MODEL_ID, cache / qw.DIR_NAME)
        query = "what storage engine holds our JSON documents?"
        second = run("recall", query)
        assert second[0] == "1" and second[2].strip() == "[]"  # no onnxruntime in this process
        local = OnnxQueryEncoder(real_embedder.model_dir).encode(query)
        assert second[1] == local.astype("<f4").tobytes().hex()
        assert qw.worker_pid(BUNDLED_MODEL_ID, cache / qw.DIR_NAME) == pid  # no second worker
        shown = subprocess.run([sys.executable, "-m", "memstore", "model", "--json"], env=env,
                               capture_output=True, text=True, timeout=120)
        assert json.loads(shown.stdout)["query_worker"] == f"running, pid {pid} (exits after 120 s idle)"
    finally:
        qw.stop_worker(BUNDLED_MODEL_ID, cache / qw.DIR_NAME)
        shutil.rmtree(cache, ignore_errors=True)
