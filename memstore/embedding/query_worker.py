"""A short-lived helper process that keeps the query encoder loaded between one-shot recalls.

Why: a fresh ``memstore recall`` (or agent hook) of a query it has never seen spends ~0.5 s
importing onnxruntime + tokenizers and creating the ONNX session, for a 3 ms embedding.
No lazy import removes that: the session has to live somewhere between calls. So:

* **Started on demand.** The first process that wants a query vector and finds no worker
  starts one (detached: its own session, stdio to /dev/null and the log file, cwd ``/``, no
  working directory on ``sys.path``) and embeds its own query locally meanwhile. Later
  processes send (model id, normalised query) over a Unix socket and get the float32 vector
  back, bit-identical to the local path, without importing onnxruntime at all.
* **Short-lived.** It exits after ``query_worker.idle_seconds`` (default 300) without a
  request, removing its socket and lock file; 0 turns the worker off. It also exits when its
  socket is removed or replaced, and on SIGTERM/SIGINT.
* **Private.** Everything lives in ``<cache dir>/query-worker/`` (0700; socket 0600).
  Where the OS reports the peer of a Unix socket (``SO_PEERCRED``), each side refuses a peer
  of another uid; elsewhere the directory's permissions are the guard, and a client uses
  the directory only if it is ours and closed to others.
* **One per model.** Files are named by a hash of the model id; the worker holds an
  exclusive ``flock`` on ``<key>.lock`` for its life, so a second one started in a race
  exits at once, and a socket left by a killed worker (the lock is free) is replaced. A
  start claim (``<key>.spawn``, removed once the worker serves) keeps processes from
  starting workers over and over when one cannot start (one attempt a minute).
* **Never required.** The client gives up silently (one debug log line) on anything: no
  socket, a timeout (``CLIENT_TIMEOUT``), another model, a protocol error. The caller then
  embeds locally. The worker never opens a store.

Protocol (little-endian), one request per connection::

    request:  b"MSQW" version:u8 model_id_len:u16 text_len:u32 model_id text   (UTF-8)
    response: b"MSQW" status:u8 payload_len:u32 payload (OK: the float32 vector)

Only ``fastembed.py`` imports this module (and ``main`` runs in the worker process).
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import settings

__all__ = ["CLIENT_TIMEOUT", "QueryWorkerClient", "main", "serve", "stop_worker", "supported", "worker_pid"]

#: Subdirectory of the cache directory that holds sockets, locks and the log.
DIR_NAME = "query-worker"
#: How long a client waits for the worker's answer before embedding locally (seconds):
#: above the ~0.3 s a 256-token query takes on 2 cores, about what loading locally costs.
CLIENT_TIMEOUT = 1.0
#: A start claim younger than this stops another start (a worker is starting, or failed).
SPAWN_BACKOFF = 60.0
#: How often an idle worker wakes to check its idle time and its socket (seconds).
POLL_SECONDS = 5.0
#: Connections served at once; more are closed (their clients embed locally).
MAX_CLIENTS = 16
#: Longest time the worker waits for one client's request.
HANDLER_TIMEOUT = 5.0
#: Longest query text accepted (recall refuses queries over 8 KiB before this).
MAX_TEXT_BYTES = 64 * 1024
MAX_MODEL_ID_BYTES = 1024
#: The log is cut (one old copy kept) past this size when a worker starts.
LOG_MAX_BYTES = 256 * 1024
#: Longest socket path the OS accepts (sun_path is 104 bytes on macOS/BSD, 108 on Linux).
MAX_SOCKET_PATH = 103

MAGIC = b"MSQW"
VERSION = 1
REQUEST = struct.Struct("<4sBHI")
RESPONSE = struct.Struct("<4sBI")
OK, WRONG_MODEL, BAD_REQUEST, FAILED = 0, 1, 2, 3

# The worker's first line: the package directory this process imported memstore from replaces
# sys.path[0] (the working directory, for ``python -c``), so the worker runs the same code.
_BOOT = ("import sys; sys.path[0] = sys.argv[1]; "
         "from memstore.embedding.query_worker import main; sys.exit(main(sys.argv[2:]))")


def supported() -> bool:
    """Unix sockets and flock exist here (not on Windows)."""
    return os.name == "posix" and sys.platform != "win32"


def _debug(message: str) -> None:
    import logging

    logging.getLogger(__name__).debug("query worker: %s", message)


class _Paths:
    """The files of the worker for one model id in one directory."""

    def __init__(self, directory: Path, model_id: str) -> None:
        import xxhash

        key = xxhash.xxh3_64_hexdigest(model_id.encode("utf-8"))
        self.directory = Path(directory)
        self.socket = self.directory / f"{key}.sock"
        self.lock = self.directory / f"{key}.lock"
        self.spawn = self.directory / f"{key}.spawn"
        self.log = self.directory / "worker.log"


def _directory_private(directory: Path) -> bool:
    """The directory is ours and closed to group and others."""
    try:
        st = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a Unix socket, where the OS says (Linux)."""
    import socket

    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or not sys.platform.startswith("linux"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _recv_exact(sock: Any, size: int, deadline: float | None = None) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer in time")
            sock.settimeout(remaining)
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed early")
        chunks += chunk
    return bytes(chunks)


# -- client ------------------------------------------------------------------------------------


class QueryWorkerClient:
    """Asks the query worker of one model for vectors, and starts it when none runs.

    ``embed`` returns the vector's little-endian float32 bytes or None; after None,
    ``absent`` says whether no worker runs (then ``start`` is worth calling). Safe to share
    between threads; ``start`` starts at most one worker per instance.
    """

    def __init__(
        self,
        model_id: str,
        model_dir: Path,
        dimension: int,
        idle_seconds: float,
        *,
        threads: int | None = None,
        directory: Path | None = None,
        timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        self.model_id = model_id
        self.model_dir = Path(model_dir)
        self.dimension = dimension
        self.idle_seconds = idle_seconds
        self.threads = threads
        self.timeout = timeout
        self.paths = _Paths(directory or settings.cache_dir() / DIR_NAME, model_id)
        self.absent = False
        #: the worker process this client started, if any
        self.process: Any = None
        self._started = False
        self._lock = threading.Lock()

    @property
    def usable(self) -> bool:
        """The worker can work here at all (platform, socket path length)."""
        return supported() and len(os.fsencode(self.paths.socket)) <= MAX_SOCKET_PATH

    def embed(self, text: str) -> bytes | None:
        """The query's vector from the running worker, or None (any failure)."""
        self.absent = False
        if not self.usable:
            return None
        try:
            return self._request(text)
        except FileNotFoundError:
            self.absent = True
        except ConnectionRefusedError:  # a socket left by a worker that was killed
            self.absent = True
            _debug(f"stale socket {self.paths.socket}")
        except Exception as exc:  # never fail a recall: the caller embeds locally
            _debug(f"{type(exc).__name__}: {exc}")
        return None

    def _request(self, text: str) -> bytes | None:
        import socket

        if not _directory_private(self.paths.directory):
            if not self.paths.directory.exists():
                raise FileNotFoundError(self.paths.directory)
            _debug(f"{self.paths.directory} is not private to this user: not used")
            return None
        st = os.lstat(self.paths.socket)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
            _debug(f"{self.paths.socket} is not our socket: not used")
            return None
        model = self.model_id.encode("utf-8")
        body = text.encode("utf-8")
        if len(body) > MAX_TEXT_BYTES or len(model) > MAX_MODEL_ID_BYTES:
            return None
        deadline = time.monotonic() + self.timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.paths.socket))
            peer = _peer_uid(sock)
            if peer is not None and peer != os.getuid():
                _debug(f"{self.paths.socket} is served by uid {peer}: not used")
                return None
            sock.sendall(REQUEST.pack(MAGIC, VERSION, len(model), len(body)) + model + body)
            magic, status, size = RESPONSE.unpack(_recv_exact(sock, RESPONSE.size, deadline))
            if magic != MAGIC or size > 4 * self.dimension:
                _debug("malformed answer")
                return None
            payload = _recv_exact(sock, size, deadline)
        if status != OK:
            _debug(f"refused (status {status})")
            return None
        if len(payload) != 4 * self.dimension:
            _debug(f"answer of {len(payload)} bytes, expected {4 * self.dimension}")
            return None
        return payload

    def start(self) -> bool:
        """Start a worker for this model unless one is starting or failed to start within
        ``SPAWN_BACKOFF`` (or this client started one already). True if one was started."""
        with self._lock:
            if self._started or not self.usable or self.idle_seconds <= 0 or not sys.executable:
                return False
            self._started = True
        try:
            settings.private_dir(self.paths.directory)
            if not _directory_private(self.paths.directory) or not self._claim_start():
                return False
            self._spawn()
            return True
        except Exception as exc:
            _debug(f"cannot start: {type(exc).__name__}: {exc}")
            return False

    def _claim_start(self) -> bool:
        path = self.paths.spawn
        for _ in range(2):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                return True
            except FileExistsError:
                try:
                    age = time.time() - os.stat(path).st_mtime
                except FileNotFoundError:
                    continue
                if age < SPAWN_BACKOFF:
                    return False
                path.unlink(missing_ok=True)  # an old claim: that worker never came up
        return False

    def _spawn(self) -> Any:
        """Start the worker process (detached) and return its Popen."""
        import subprocess

        package_root = str(Path(__file__).resolve().parents[2])
        args = [sys.executable, "-c", _BOOT, package_root,
                "--directory", str(self.paths.directory), "--model-id", self.model_id,
                "--model-dir", str(self.model_dir), "--dimension", str(self.dimension),
                "--idle", repr(float(self.idle_seconds))]
        if self.threads:
            args += ["--threads", str(self.threads)]
        log = os.open(self.paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                cwd="/", start_new_session=True, close_fds=True,
            )
        finally:
            os.close(log)
        self.process = proc
        # Reap it when it exits, should this process still be running then (an MCP server).
        threading.Thread(target=proc.wait, name="memstore-query-worker-reaper", daemon=True).start()
        return proc


# -- worker --------------------------------------------------------------------------------------


def _take_lock(path: Path) -> int | None:
    """An fd holding the exclusive flock on ``path``, or None if another process holds it.
    The lock file is removed by its holder on exit, so the fd must still be the file at
    ``path`` once locked (else another worker removed it meanwhile: try again)."""
    import fcntl

    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    return None


def _unlink_if(path: Path, inode: int | None) -> None:
    """Remove ``path`` if it is still the file we made (inode), else leave it."""
    try:
        if inode is not None and os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def _rotate_log(path: Path) -> None:
    try:
        if path.stat().st_size > LOG_MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(fd, 2)
            os.close(fd)
    except OSError:
        pass


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        sys.stderr.write(f"{stamp} pid {os.getpid()}: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


class _Server:
    """The accept loop and the request handler of a running worker."""

    def __init__(self, listener: Any, socket_path: Path, inode: int, model_id: str,
                 dimension: int, encoder: Any, idle_seconds: float) -> None:
        self.listener = listener
        self.socket_path = socket_path
        self.inode = inode
        self.model_id = model_id
        self.dimension = dimension
        self.encoder = encoder
        self.idle_seconds = idle_seconds
        self.lock = threading.Lock()
        self.active = 0
        self.served = 0
        self.last = time.monotonic()

    def _socket_is_ours(self) -> bool:
        try:
            return os.stat(self.socket_path).st_ino == self.inode
        except OSError:
            return False

    def run(self) -> str:
        """Serve until idle for ``idle_seconds`` or the socket is gone; the reason."""
        while True:
            with self.lock:
                idle_for = time.monotonic() - self.last if self.active == 0 else 0.0
            if idle_for >= self.idle_seconds:
                return f"idle for {self.idle_seconds:g} s"
            if not self._socket_is_ours():
                return f"{self.socket_path} was removed or replaced"
            self.listener.settimeout(max(0.01, min(POLL_SECONDS, self.idle_seconds - idle_for)))
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with self.lock:
                self.last = time.monotonic()
                crowded = self.active >= MAX_CLIENTS
                if not crowded:
                    self.active += 1
            if crowded:
                conn.close()
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: Any) -> None:
        try:
            with conn:
                conn.settimeout(HANDLER_TIMEOUT)
                peer = _peer_uid(conn)
                if peer is not None and peer != os.getuid():
                    return
                status, payload = self._answer(conn)
                conn.sendall(RESPONSE.pack(MAGIC, status, len(payload)) + payload)
        except Exception:  # a client that went away or sent garbage: nothing to do
            pass
        finally:
            with self.lock:
                self.active -= 1
                self.served += 1
                self.last = time.monotonic()

    def _answer(self, conn: Any) -> tuple[int, bytes]:
        magic, version, model_len, text_len = REQUEST.unpack(_recv_exact(conn, REQUEST.size))
        if (magic != MAGIC or version != VERSION or model_len > MAX_MODEL_ID_BYTES
                or text_len > MAX_TEXT_BYTES):
            return BAD_REQUEST, b""
        model_id = _recv_exact(conn, model_len).decode("utf-8")
        text = _recv_exact(conn, text_len).decode("utf-8")
        if model_id != self.model_id:
            return WRONG_MODEL, b""
        try:
            vector = self.encoder.encode(text)
        except Exception as exc:
            _log(f"embedding failed: {type(exc).__name__}: {exc}")
            return FAILED, b""
        if vector.shape != (self.dimension,):
            return FAILED, b""
        return OK, vector.astype("<f4").tobytes()


def _listen(path: Path) -> tuple[Any, int]:
    """A listening socket at ``path`` (0600), replacing whatever is there (we hold the lock,
    so a socket there is a dead worker's)."""
    import socket

    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    except BaseException:
        listener.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    listener.listen(64)
    return listener, os.stat(path).st_ino


def serve(directory: Path, model_id: str, model_dir: Path, dimension: int, idle_seconds: float,
          threads: int | None = None) -> int:
    """Run a worker until it is idle (the worker process's body). Exit status: 0 when it
    served or another worker holds the lock, 1 when it could not start."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    paths = _Paths(directory, model_id)
    if not _directory_private(paths.directory):
        _log(f"{paths.directory} is not private to this user: not serving")
        return 1
    lock_fd = _take_lock(paths.lock)
    if lock_fd is None:
        return 0  # another worker serves this model (or is starting)
    lock_inode = os.fstat(lock_fd).st_ino
    listener, socket_inode = None, None
    try:
        _rotate_log(paths.log)
        from .onnx_query import OnnxQueryEncoder

        encoder = OnnxQueryEncoder(model_dir, threads)
        probe = encoder.encode("memstore query worker")  # loads and warms the session
        if probe.shape != (dimension,):
            _log(f"{model_dir} gives {probe.shape[0]}-d vectors, expected {dimension}: not serving")
            return 1
        listener, socket_inode = _listen(paths.socket)
        paths.spawn.unlink(missing_ok=True)
        _log(f"serving {model_id} on {paths.socket} (idle exit after {idle_seconds:g} s)")
        server = _Server(listener, paths.socket, socket_inode, model_id, dimension, encoder,
                         idle_seconds)
        reason = server.run()
        _log(f"exiting: {reason}, {server.served} queries served")
        return 0
    except (SystemExit, KeyboardInterrupt):
        _log("exiting: stopped by a signal")
        return 0
    except Exception as exc:
        _log(f"cannot serve: {type(exc).__name__}: {exc}")
        return 1
    finally:
        _unlink_if(paths.socket, socket_inode)
        if listener is not None:
            listener.close()
        _unlink_if(paths.lock, lock_inode)
        os.close(lock_fd)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process (see ``QueryWorkerClient._spawn``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="memstore-query-worker", description=__doc__.split("\n")[0])
    parser.add_argument("--directory", type=Path, required=True)
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--dimension", type=int, required=True)
    parser.add_argument("--idle", type=float, required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.idle <= 0:
        return 0
    return serve(args.directory, args.model_id, args.model_dir, args.dimension, args.idle,
                 args.threads)


# -- for tests and benchmarks ------------------------------------------------------------------


def worker_pid(model_id: str, directory: Path | None = None) -> int | None:
    """The pid of the worker serving ``model_id``, or None when none holds the lock."""
    import fcntl

    paths = _Paths(directory or settings.cache_dir() / DIR_NAME, model_id)
    try:
        fd = os.open(paths.lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop_worker(model_id: str, directory: Path | None = None, timeout: float = 10.0) -> bool:
    """Stop the worker serving ``model_id`` (SIGTERM, then SIGKILL after ``timeout``) and wait
    until its lock is released. True if one was running."""
    import signal

    pid = worker_pid(model_id, directory)
    if pid is None:
        return False
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker_pid(model_id, directory) != pid:
                return True
            time.sleep(0.02)
    return True
