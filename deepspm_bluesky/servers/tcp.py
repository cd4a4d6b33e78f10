"""A TCP server for one client at a time, run in a background thread (tests) or blocking (CLI).

Instrument servers subclass `SingleClientServer` and implement `serve_client`, which reads
requests from one connected socket until the client leaves. A client that disconnects, even in
the middle of a request, only ends its own session: the server goes back to `accept`.
Each connection is logged (INFO); each request and reply with its timing at DEBUG, which
`log_to_stderr(verbose=True)` shows.
"""

from __future__ import annotations

import logging
import select
import socket
import sys
import threading
import time
from typing import Self

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting server looks at its stop flag
SEND_TIMEOUT_S = 30.0  # a client that stops reading for this long is dropped


def log_to_stderr(verbose: bool = False) -> None:
    """Show the servers' log on stderr: connections, and with `verbose` every exchange."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("deepspm_bluesky.servers").setLevel(
        logging.DEBUG if verbose else logging.INFO)


def milliseconds_since(started: float) -> float:
    """Milliseconds elapsed since the `time.perf_counter()` reading `started`."""
    return (time.perf_counter() - started) * 1e3


class ServerStopped(Exception):
    """Raised inside `serve_client` when the server is asked to stop."""


class SingleClientServer:
    """Accepts one client at a time and hands its socket to `serve_client`.

    Parameters
    ----------
    host
        Address to bind; the default accepts only local clients.
    port
        Port to bind; 0 picks a free one (see `address`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._listener = socket.create_server((host, port), backlog=8)
        self._listener.settimeout(POLL_S)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        host, port = self._listener.getsockname()[:2]
        return host, port

    # -- running -----------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Serve clients one after the other until `stop` is called."""
        try:
            while not self._stop.is_set():
                try:
                    conn, peer = self._listener.accept()
                except TimeoutError:
                    continue
                self._session(conn, peer)
        except OSError:
            if not self._stop.is_set():
                raise
        finally:
            self._listener.close()

    def start(self) -> Self:
        """Serve in a daemon thread; returns at once."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True,
                                        name=f"{type(self).__name__}:{self.address[1]}")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and wait for the serving thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        else:
            self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers for subclasses --------------------------------------------------------
    def serve_client(self, conn: socket.socket) -> None:
        """Read and answer requests from `conn` until the client leaves (return then)."""
        raise NotImplementedError

    def receive(self, conn: socket.socket, max_bytes: int) -> bytes:
        """Up to `max_bytes` from the client; b"" when it has closed the connection."""
        while True:
            if self._stop.is_set():
                raise ServerStopped
            try:
                return conn.recv(max_bytes)
            except TimeoutError:
                continue

    def receive_exactly(self, conn: socket.socket, n: int) -> bytes | None:
        """Exactly `n` bytes, or None when the client leaves before sending them all."""
        chunks, got = [], 0
        while got < n:
            chunk = self.receive(conn, min(n - got, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    @staticmethod
    def send(conn: socket.socket, data: bytes) -> None:
        """Send all of `data` (OSError when the client has gone)."""
        conn.settimeout(SEND_TIMEOUT_S)
        try:
            conn.sendall(data)
        finally:
            conn.settimeout(POLL_S)

    @staticmethod
    def client_gone(conn: socket.socket) -> bool:
        """True when the client has already closed its side (so a request it sent is moot)."""
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        try:
            return conn.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- internals ---------------------------------------------------------------------
    def _session(self, conn: socket.socket, peer: object) -> None:
        log.info("client %s connected", peer)
        with conn:
            conn.settimeout(POLL_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.serve_client(conn)
            except ServerStopped:
                return
            except OSError as exc:  # reset, broken pipe: the client left mid-reply
                log.info("client %s left: %s", peer, exc)
        log.info("client %s disconnected", peer)
