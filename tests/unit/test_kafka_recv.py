"""The larger socket reads and single-copy frame reads patched into kafka-python 3.0.x."""

from __future__ import annotations

import socket

import pytest
from kafka.errors import KafkaConnectionError
from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport
from kafka.protocol.frame import KafkaBytes

from shared import kafka_recv


class _Transport:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock


def test_installed_on_both_transports_and_the_frame_buffer():
    import shared.kafka_io  # noqa: F401 - importing it installs the patch

    assert kafka_recv._installed and kafka_recv.install()
    assert KafkaTCPTransport._sock_recv is kafka_recv._sock_recv
    assert KafkaSSLTransport._sock_recv is kafka_recv._sock_recv
    assert KafkaBytes.read is kafka_recv._read


def test_reads_everything_waiting_in_large_reads_then_stops_without_blocking():
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        payload = bytes(range(256)) * 12_000  # 3 MB: more than one RECV_BYTES read
        b.setblocking(True)
        sent = 0
        got = bytearray()
        while sent < len(payload):  # the socket buffer is smaller than the payload
            sent += b.send(payload[sent:sent + 200_000])
            data, err = kafka_recv._sock_recv(_Transport(a))
            assert err is None
            got += data
        while len(got) < len(payload):
            data, err = kafka_recv._sock_recv(_Transport(a))
            assert err is None
            got += data
        assert bytes(got) == payload
        assert kafka_recv._sock_recv(_Transport(a)) == (b"", None)  # nothing waiting: no error, no block
    finally:
        a.close()
        b.close()


def test_a_closed_peer_is_a_connection_error():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.sendall(b"last words")
    b.close()
    try:
        data, err = kafka_recv._sock_recv(_Transport(a))
        assert data == b"last words" and isinstance(err, KafkaConnectionError)
    finally:
        a.close()


@pytest.mark.parametrize("reads", [[3, 4, None], [100], [0, 5, 5, 5]])
def test_frame_reads_return_the_same_bytes_as_before(reads):
    buf = KafkaBytes(10)
    buf.write(b"0123456789")
    buf.seek(0)
    ref = b"0123456789"
    pos = 0
    for n in reads:
        end = len(ref) if n is None else min(pos + n, len(ref))
        out = buf.read(n)
        assert type(out) is bytes and out == ref[pos:end] and buf.tell() == end
        pos = end


class _ScriptedSocket:
    """recv returns the scripted items in turn; an exception item is raised."""

    def __init__(self, *items):
        self.items = list(items)
        self.sizes = []

    def recv(self, n):
        self.sizes.append(n)
        item = self.items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


def test_several_reads_waiting_are_joined_in_order_until_the_socket_would_block():
    sock = _ScriptedSocket(b"ab", b"cd", b"e", BlockingIOError())
    assert kafka_recv._sock_recv(_Transport(sock)) == (b"abcde", None)
    assert sock.sizes == [kafka_recv.RECV_BYTES] * 4


def test_a_failing_read_is_a_connection_error_logged_with_its_cause(caplog):
    t = _Transport(_ScriptedSocket(b"partial", ConnectionResetError("reset by peer")))
    with caplog.at_level("WARNING", logger="kafka.net.transport"):
        data, err = kafka_recv._sock_recv(t)
    assert data == b"partial"
    assert isinstance(err, KafkaConnectionError) and "reset by peer" in str(err)
    [rec] = caplog.records
    assert rec.name == "kafka.net.transport" and rec.levelname == "ERROR"
    assert rec.getMessage() == f"{t}: Error receiving network data closing socket"
    assert isinstance(rec.exc_info[1], ConnectionResetError)


def test_a_closed_peer_is_logged_as_socket_disconnected_which_the_services_watch_for(caplog):
    """shared.service.ConnectionWatch recognises a dropped broker by this log line."""
    from shared.service import ConnectionWatch

    t = _Transport(_ScriptedSocket(b"x", b""))
    with caplog.at_level("WARNING", logger="kafka.net.transport"):
        data, err = kafka_recv._sock_recv(t)
    assert data == b"x" and isinstance(err, KafkaConnectionError)
    assert str(err) == str(KafkaConnectionError("socket disconnected"))
    [rec] = caplog.records
    assert rec.getMessage() == f"{t}: socket disconnected" and rec.levelname == "ERROR"
    assert any(sign in rec.getMessage() for sign in ConnectionWatch.SIGNS)


@pytest.fixture
def unpatched(monkeypatch):
    """kafka-python's own transports and frame buffer, as before the patch (restored after)."""
    from kafka.net import transport

    originals = {}
    for cls in (transport.KafkaTCPTransport, transport.KafkaSSLTransport):
        def own(self):
            return b"own", None
        monkeypatch.setattr(cls, "_sock_recv", own)
        originals[cls] = own

    def own_read(self, nbytes=None):
        return b"own"
    monkeypatch.setattr(KafkaBytes, "read", own_read)
    monkeypatch.setattr(kafka_recv, "_installed", False)
    return transport, originals, own_read


def test_install_patches_both_transports_and_the_frame_buffer_once(unpatched):
    assert kafka_recv.install() is True
    assert KafkaTCPTransport._sock_recv is kafka_recv._sock_recv
    assert KafkaSSLTransport._sock_recv is kafka_recv._sock_recv
    assert KafkaBytes.read is kafka_recv._read
    assert kafka_recv.install() is True


@pytest.mark.parametrize("change", ["no_tcp", "no_ssl", "tcp_without_recv", "ssl_without_recv",
                                    "bytes_not_bytearray", "bytes_without_read"])
def test_transports_that_differ_from_3_0_are_left_alone(unpatched, monkeypatch, caplog, change):
    transport, originals, own_read = unpatched

    class Other:
        pass
    if change == "no_tcp":
        monkeypatch.delattr(transport, "KafkaTCPTransport")
    elif change == "no_ssl":
        monkeypatch.delattr(transport, "KafkaSSLTransport")
    elif change == "tcp_without_recv":
        monkeypatch.setattr(transport, "KafkaTCPTransport", Other)
    elif change == "ssl_without_recv":
        monkeypatch.setattr(transport, "KafkaSSLTransport", Other)
    elif change == "bytes_not_bytearray":
        import kafka.protocol.frame

        monkeypatch.setattr(kafka.protocol.frame, "KafkaBytes", type("KafkaBytes", (), {"read": own_read}))
    else:
        monkeypatch.delattr(KafkaBytes, "read")
    with caplog.at_level("DEBUG", logger="shared.kafka_recv"):
        assert kafka_recv.install() is False
    assert not kafka_recv._installed
    for cls, own in originals.items():
        assert cls._sock_recv is own
    assert getattr(KafkaBytes, "read", own_read) is own_read
    assert not hasattr(Other, "_sock_recv")
    assert [r.getMessage() for r in caplog.records] == [
        "kafka-python transports differ from 3.0.x: socket reads left as they are"]


def test_without_kafka_net_the_reads_are_left_alone(unpatched, monkeypatch, caplog):
    import sys

    import kafka.net

    monkeypatch.delattr(kafka.net, "transport")
    monkeypatch.setitem(sys.modules, "kafka.net.transport", None)  # the import fails
    with caplog.at_level("DEBUG", logger="shared.kafka_recv"):
        assert kafka_recv.install() is False
    assert [r.getMessage() for r in caplog.records] == [
        "kafka.net.transport not found: socket reads left as they are"]
    assert not kafka_recv._installed and KafkaTCPTransport._sock_recv is unpatched[1][KafkaTCPTransport]
