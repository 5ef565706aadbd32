"""An image brought to a host: streamed once (docker save | ssh docker load), not again when the host
has it, and a network cut in the middle of the stream a HostUnreachable within seconds, no hang."""

from __future__ import annotations

import threading
import time

import pytest

from ultra_ops.engine.hosts.images import host_image_id, local_image_id, send_image
from ultra_ops.engine.hosts.ssh import HostUnreachable
from ultra_ops_tests.support.hosts import TestHost, ssh_clients_to

pytestmark = pytest.mark.docker

IMAGE = "ultra-local/python:3.11"  # about 220 MB: long enough to cut in the middle


def test_sent_once_then_not_again(host: TestHost) -> None:
    remote = host.remote(user="deploy")
    assert host_image_id(remote, IMAGE) is None
    assert send_image(remote, IMAGE) == "sent to the host"
    assert host_image_id(remote, IMAGE) == local_image_id(IMAGE)
    started = time.monotonic()
    assert send_image(remote, IMAGE) == "already on the host"
    assert time.monotonic() - started < 5


class CutWhenSending:
    """A log that cuts the host's network two seconds into the stream (once it says it sends)."""

    def __init__(self, host: TestHost) -> None:
        self.host = host
        self.cut_at: float | None = None
        self.timer = threading.Timer(2.0, self.cut)

    def cut(self) -> None:
        self.cut_at = time.monotonic()
        self.host.cut()

    def info(self, msg: str) -> None:
        if msg.startswith("sending "):
            self.timer.start()

    def warning(self, msg: str) -> None:
        pass


def test_a_cut_in_the_middle_of_the_stream(host: TestHost) -> None:
    remote = host.remote(user="deploy")
    log = CutWhenSending(host)
    try:
        with pytest.raises(HostUnreachable) as caught:
            send_image(remote, IMAGE, log=log)
        failed_at = time.monotonic()
        assert log.cut_at is not None, "the stream was cut while it ran"
        assert failed_at - log.cut_at < 15, "noticed by ssh's keepalives, not TCP's minutes"
        assert f"staging's host deploy@{host.address}:22: the connection was lost" in str(caught.value)
        assert not ssh_clients_to(host.address)
    finally:
        log.timer.join()
        host.restore()
    # Nothing half loaded: the host has no such image, and once back it gets the whole of it.
    fleet_remote = host.remote(user="deploy")
    host.fleet.wait_listening(host)
    assert host_image_id(fleet_remote, IMAGE) is None
    assert send_image(fleet_remote, IMAGE) == "sent to the host"
