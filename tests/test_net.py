"""Cluster addresses (bigsink._net): malformed ones refused before dialling, wrong ports
named within seconds (a web server, nothing listening, a silent listener)."""

from __future__ import annotations

import socket
import time

import pytest

from bigsink._net import Address, dask_address, probe, ray_address
from bigsink.errors import InputError


@pytest.mark.parametrize("bad", ["localhost", "tcp://127.0.0.1", "127.0.0.1:99999",
                                 "tcp://127.0.0.1:8786/path", ":8786"])
def test_malformed_dask_addresses_are_refused(bad: str) -> None:
    with pytest.raises(InputError, match="not a host:port address"):
        dask_address("client", bad)


def test_dask_addresses_parse_and_a_dashboard_url_is_named() -> None:
    assert dask_address("client", "127.0.0.1:8786") == Address("tcp", "127.0.0.1", 8786)
    assert str(dask_address("client", "tcp://127.0.0.1:9000")) == "tcp://127.0.0.1:9000"
    with pytest.raises(InputError, match="web URL"):
        dask_address("client", "http://127.0.0.1:8787/status")


def test_probe_names_a_web_server_nothing_listening_and_a_silent_listener(
        http_port: int, free_port: int) -> None:
    t0 = time.monotonic()
    with pytest.raises(InputError, match=f"127.0.0.1:{http_port}: it answers HTTP.*dashb"):
        probe("client", Address("tcp", "127.0.0.1", http_port), "a Dask scheduler",
              "dask scheduler", "the dashboard (usually :8787)?")
    port = free_port
    with pytest.raises(InputError, match=f"reach tcp://127.0.0.1:{port}: nothing accepts"):
        probe("client", Address("tcp", "127.0.0.1", port), "a Dask scheduler",
              "dask scheduler", "the dashboard?")
    with socket.socket() as silent:                     # accepts, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        where = Address("tcp", "127.0.0.1", silent.getsockname()[1])
        with pytest.raises(InputError, match="does not answer as a Dask scheduler does"):
            probe("client", where, "a Dask scheduler", "dask scheduler", "?", timeout=1.0)
    assert time.monotonic() - t0 < 15


def test_ray_addresses(http_port: int, free_port: int, monkeypatch: pytest.MonkeyPatch
                       ) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address("address", None) is None
    assert ray_address("address", "auto") == "auto"
    assert ray_address("address", "ray://127.0.0.1:10001") == "ray://127.0.0.1:10001"
    with pytest.raises(InputError, match=r"nothing accepts connections.*ray start --head"):
        ray_address("address", f"127.0.0.1:{free_port}")
    with pytest.raises(InputError, match=r"it answers HTTP.*Ray's dashboard"):
        ray_address("address", f"127.0.0.1:{http_port}")
    with pytest.raises(InputError, match="not a host:port"):
        ray_address("address", "127.0.0.1")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port}")     # the environment's own
    with pytest.raises(InputError, match=f"127.0.0.1:{free_port}"):
        ray_address("address", None)
