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
