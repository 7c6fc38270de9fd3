"""Cluster addresses, checked before anyone dials them: a Dask scheduler's or a Ray head's
address is parsed, refused when malformed, and probed with a plain socket under a short
timeout, so a wrong port fails in seconds with the likely mistake named instead of hanging
in a client library's retries (a ``distributed.Client`` pointed at a dashboard port waits
forever; ``ray.init`` retries for minutes).

The probe: connect (refused or silent: nothing listens there); then a Dask scheduler
speaks first (its handshake), so silence is followed by one ``HEAD`` request, and an
``HTTP/1`` answer means a web server (a dashboard) answered, not a scheduler. A Ray head's
GCS port speaks gRPC (HTTP/2) and answers a plain HTTP/1 request with none of that, while
Ray's dashboard answers it: the same probe tells them apart.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InputError

__all__ = ["CONNECT_TIMEOUT_S", "Address", "dask_address", "probe", "ray_address"]

#: Seconds a probe waits to connect, and then for a first answer.
CONNECT_TIMEOUT_S = 5.0
#: Seconds a connected probe waits for a Dask scheduler's handshake before asking HTTP.
HANDSHAKE_S = 1.0


@dataclass(frozen=True)
class Address:
    """A parsed ``host:port`` (``scheme`` as given, e.g. ``tcp``)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}" if self.scheme else (
            f"{self.host}:{self.port}")


def _split(name: str, value: str, example: str) -> Address:
    """``host:port`` with an optional ``scheme://`` (InputError naming ``name``)."""
    text = value.strip()
    parts = urlsplit(text if "://" in text else f"tcp://{text}")     # (a scheme to parse)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/"):
        raise InputError(f"{name}: {value!r} is not a host:port address; expected e.g. "
                         f"{example!r}.")
    return Address(parts.scheme if "://" in text else "", parts.hostname, port)


def dask_address(name: str, value: str) -> Address:
    """A Dask scheduler address (``tcp://host:port`` or ``host:port``), refused with an
    InputError naming ``name`` when malformed (a URL of the dashboard included)."""
    example = "tcp://127.0.0.1:8786"
    if value.strip().lower().startswith(("http://", "https://")):
        raise InputError(f"{name}: {value!r} is a web URL (the dashboard's?); a Dask "
                         f"scheduler's address looks like {example!r}.")
    address = _split(name, value, example)
    return Address(address.scheme or "tcp", address.host, address.port)


def ray_address(name: str, value: str | None) -> str | None:
    """A Ray address as ``ray.init(address=...)`` takes it: None (start a local Ray unless
    ``RAY_ADDRESS`` is set), ``"auto"``, ``"ray://host:port"`` (Ray Client) or
    ``"host:port"`` (a head's GCS), which is probed (:func:`probe`) before Ray dials it."""
    value = value if value is not None else os.environ.get("RAY_ADDRESS") or None
    if value is None or value == "auto" or value.startswith("ray://"):
        return value
    if value.strip().lower().startswith(("http://", "https://")):
        raise InputError(f"{name}: {value!r} is a web URL (the Ray dashboard's?); a Ray "
                         "head's address looks like '127.0.0.1:6379'.")
    address = _split(name, value, "127.0.0.1:6379")
    if address.scheme:
        raise InputError(f"{name}: {value!r}: a Ray address is host:port, 'auto' or "
                         "ray://host:port.")
    probe(name, address, "a Ray head", "ray start --head --port=6379",
          "Ray's dashboard (usually :8265)? The head's GCS usually listens on :6379",
          speaks_first=False)
    return f"{address.host}:{address.port}"


def probe(name: str, address: Address, what: str, start: str, http_hint: str,
          speaks_first: bool = True, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Check that something that is not a web server listens at ``address``, within about
    ``timeout + HANDSHAKE_S`` seconds; an InputError naming ``name``, the address and the
    likely mistake otherwise. ``speaks_first``: a server that sends first (Dask) is
    recognised by that alone."""
    where = str(address)
    try:
        sock = socket.create_connection((address.host, address.port), timeout=timeout)
    except TimeoutError:
        raise InputError(f"{name}: could not reach {where}: no answer within {timeout:g} s. "
                         f"Is {what} running there, and reachable (firewall)? Start one "
                         f"with `{start}`.") from None
    except OSError as exc:
        raise InputError(f"{name}: could not reach {where}: nothing accepts connections "
                         f"there ({exc.strerror or exc}). Is {what} running there? Start "
                         f"one with `{start}`.") from None
    with sock:
        try:
            if speaks_first:
                sock.settimeout(HANDSHAKE_S)
                try:
                    if sock.recv(1):
                        return                                       # a handshake: fine
                except TimeoutError:
                    pass
            sock.settimeout(timeout)
            sock.sendall(b"HEAD / HTTP/1.0\r\nHost: bigsink\r\n\r\n")
            answer = sock.recv(16)
        except OSError:                          # silent, or closed on a stranger's bytes
            answer = b""
    if answer.startswith(b"HTTP/1"):
        raise InputError(f"{name}: could not reach {what} at {where}: it answers HTTP, so "
                         f"it is a web server. Is it {http_hint}.")
    if speaks_first:
        raise InputError(f"{name}: could not reach {what} at {where}: it accepts "
                         f"connections but does not answer as {what} does. Check the port.")
