"""The Docker engine's plumbing, shared by the backend and its sandboxes: the client, the one
translation of docker-py's and requests' errors, the attach stream's socket and its demultiplexer."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import docker
import docker.errors
import requests.exceptions
from docker.utils import kwargs_from_env

from sandbox.errors import SandboxError

ENGINE_TIMEOUT_S = 30
EXPIRY_GRACE_S = 60.0  # how long past its deadlines a container may live (its expiry label)
STDOUT_STREAM, STDERR_STREAM = 1, 2
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def connect(timeout_s: float) -> docker.APIClient:
    """A low-level client for the engine DOCKER_HOST names (TLS settings included), else the local one."""
    return docker.APIClient(timeout=timeout_s, version="auto", **kwargs_from_env())


@contextlib.contextmanager
def engine_call(doing: str) -> Iterator[None]:
    """Translate docker-py's and requests' errors into the sandbox's own, once, here."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise SandboxError(
            f"{doing}: the sandbox image is missing (build it with scripts/ensure_docker.sh): {exc}"
        ) from exc
    except ENGINE_ERRORS as exc:
        raise SandboxError(f"{doing}: {exc}") from exc


def raw_socket(attached) -> socket.socket:
    """The socket under docker-py's attach stream (a wrapper on some platforms, not all)."""
    return getattr(attached, "_sock", attached)


def close_attached(attached) -> None:
    """Shut down and close an attach stream and the socket under it."""
    sock = raw_socket(attached)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    # docker-py keeps the hijacked HTTP response on the socket object: close it first
    response = getattr(attached, "_response", None)
    if response is not None:
        response.close()
    attached.close()
    sock.close()


class Demux:
    """Reads Docker's multiplexed attach stream: returns stdout bytes, keeps stderr up to a cap.

    Each frame is an 8-byte header (stream id, three zero bytes, big-endian length) and
    its payload; payloads are passed on in pieces, so a huge frame is never buffered.
    """

    def __init__(self, sock: socket.socket, stderr_cap_bytes: int) -> None:
        self.sock = sock
        self.stderr = bytearray()
        self.stderr_cap_bytes = stderr_cap_bytes
        self.stream = 0
        self.remaining = 0

    def _header(self) -> bytes:
        header = b""
        while len(header) < 8:
            chunk = self.sock.recv(8 - len(header))
            if not chunk:
                return b""
            header += chunk
        return header

    def read(self, size: int) -> bytes:
        with contextlib.suppress(OSError):
            while True:
                if not self.remaining:
                    header = self._header()
                    if not header:
                        return b""
                    self.stream, self.remaining = header[0], int.from_bytes(header[4:8], "big")
                    continue
                chunk = self.sock.recv(min(size, self.remaining))
                if not chunk:
                    return b""
                self.remaining -= len(chunk)
                if self.stream == STDOUT_STREAM:
                    return chunk
                room = self.stderr_cap_bytes - len(self.stderr)
                if self.stream == STDERR_STREAM and room > 0:
                    self.stderr += chunk[:room]
        return b""
