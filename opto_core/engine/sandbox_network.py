"""The sandbox's only way out: a relay in the box, a forwarder in the driver, and a unix socket between them.

A box has its own network namespace: a loopback interface and nothing else, so nothing in it can
reach any host. For each endpoint the workflow needs, a relay thread in the worker listens on a
loopback address in the box (the endpoint's name maps to that address in the box's ``/etc/hosts``;
``127.0.0.1:PORT`` stays itself). A connection to it is passed over the unix socket (the one file of
the driver bound into the box) with the endpoint's number; the driver's forwarder connects to that
endpoint, and only to a listed one, and copies bytes both ways. The bytes are not read: TLS runs end
to end between the workflow's client and the real server, certificates and all.

Code in the box can talk to the unix socket directly, but it can only name listed endpoints.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Sequence

log = logging.getLogger("opto")

_CHUNK = 65536


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until ``source`` ends, then end ``sink``'s writing side."""
    try:
        while True:
            data = source.recv(_CHUNK)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _join(a: socket.socket, b: socket.socket, name: str) -> None:
    """Copy both ways between ``a`` and ``b`` (one daemon thread each way); close both when both ends are done."""

    def both() -> None:
        other = threading.Thread(target=_pump, args=(b, a), daemon=True, name=f"{name}-back")
        other.start()
        _pump(a, b)
        other.join()
        for sock in (a, b):
            try:
                sock.close()
            except OSError:
                pass

    threading.Thread(target=both, daemon=True, name=name).start()


class Forwarder:
    """The driver's side: a unix socket whose connections each go to one listed endpoint."""

    def __init__(self, path: str, endpoints: Sequence[tuple[str, int]], connect_timeout: float = 20.0) -> None:
        self.path = path
        self.endpoints = list(endpoints)
        self.connect_timeout = connect_timeout
        self.refused = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        os.chmod(path, 0o600)
        self._server.listen(64)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="opto-sandbox-forwarder")
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(conn,), daemon=True, name="opto-sandbox-connect").start()

    def _connect(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10.0)
            header = b""
            while not header.endswith(b"\n") and len(header) < 16:
                data = conn.recv(1)
                if not data:
                    raise OSError("no header")
                header += data
            index = int(header.strip())
            if not 0 <= index < len(self.endpoints):
                raise ValueError(f"endpoint #{index} is not listed")
            host, port = self.endpoints[index]
            upstream = socket.create_connection((host, port), timeout=self.connect_timeout)
        except (OSError, ValueError) as exc:
            self.refused += 1
            log.debug("sandbox forwarder: refused a connection (%s)", exc)
            conn.close()
            return
        conn.settimeout(None)
        upstream.settimeout(None)
        _join(conn, upstream, "opto-sandbox-forward")

    def close(self) -> None:
        self._closed.set()
        try:
            self._server.close()
        finally:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def start_relays(socket_path: str, relays: Sequence[tuple[str, int, int]]) -> list[socket.socket]:
    """The box's side: listen on each ``(address, port)`` and pass connections to the forwarder as endpoint ``index``."""
    listeners = []
    for address, port, index in relays:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((address, int(port)))
        server.listen(64)
        listeners.append(server)
        threading.Thread(
            target=_relay, args=(server, socket_path, int(index)), daemon=True, name=f"opto-relay-{address}:{port}"
        ).start()
    return listeners


def _relay(server: socket.socket, socket_path: str, index: int) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        try:
            out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            out.connect(socket_path)
            out.sendall(f"{index}\n".encode())
        except OSError:
            conn.close()
            continue
        _join(conn, out, "opto-relay")
