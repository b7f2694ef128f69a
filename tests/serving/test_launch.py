"""The test helpers that start and stop services (serving/launch.py): the port they choose and what a
service that fails to start leaves in the error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving.launch import _ephemeral_ports, free_port, stop_service, wait_ready


def test_free_ports_are_drawn_outside_the_range_outgoing_connections_take() -> None:
    """A port from the ephemeral range may be taken by any client's connection before the server binds it."""
    ephemeral = _ephemeral_ports()
    ports = {free_port() for _ in range(50)}
    assert not ports & set(ephemeral)
    assert all(1024 < port < 65536 for port in ports)
    assert len(ports) > 40        # drawn, not one port handed to every caller


def test_a_service_that_exits_before_it_is_ready_is_reported_with_its_code_and_output(tmp_path) -> None:
    """Not a ProcessLookupError from stopping a process group that is gone."""
    log = (tmp_path / "log").open("w+b")
    process = subprocess.Popen([sys.executable, "-c", "import sys; print('address already in use', file=sys.stderr); sys.exit(3)"],
                               start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    process.log = log
    process.wait(timeout=30)
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3 before it was ready.*address already in use"):
        wait_ready(process, free_port(), timeout=10, what="the service")
    assert log.closed
    stop_service(process)        # again: nothing left to stop, no error


def test_no_port_outside_the_ephemeral_range_is_an_error_not_an_ephemeral_port(monkeypatch) -> None:
    import serving.launch as launch

    monkeypatch.setattr(launch, "_ephemeral_ports", lambda: range(1024, 65536))
    with pytest.raises(RuntimeError, match="no free port"):
        launch.free_port()
    monkeypatch.setattr(launch, "_ephemeral_ports", lambda: range(1024, 40000))
    monkeypatch.setattr(launch, "_reserved_ports", lambda: set(range(40000, 65000)))
    assert 65000 <= launch.free_port() < 65536
