"""Large socket reads for kafka-python 3.0.x.

kafka-python 3.0 reads its sockets 4 KiB at a time (`KafkaTCPTransport._sock_recv` and
the SSL variant), in the client's I/O thread. Our records are big (a chunk's features
are ~125 KB, a chunk's PCM up to 2.6 MB), so a fetch of 50 MB became ~12,000 `recv`
calls, each of which releases and re-takes the GIL. In the classifier that I/O thread
then held the GIL for about half of the wall time and, through the GIL hand-offs, halved
the inference thread's throughput (measured: `bench/classifier.py`, 700-980 chunks/s
before, see the README for after). Reading up to RECV_BYTES per call is the same loop
with a bigger size: same bytes, same order, same error handling.

Installed once by `shared.kafka_io`; a kafka-python whose transports look different is
left alone (logged at debug level).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from kafka.errors import KafkaConnectionError

logger = logging.getLogger(__name__)
_transport_log = logging.getLogger("kafka.net.transport")  # where kafka-python logs these

RECV_BYTES = 1 << 20
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_installed = False


def _sock_recv(self: Any) -> tuple[bytes, Exception | None]:
    """Everything readable now, in reads of up to RECV_BYTES (kafka-python's contract:
    (data, error), the error a KafkaConnectionError on a closed or failed socket)."""
    received: list[bytes] = []
    err = None
    while True:
        try:
            data = self._sock.recv(RECV_BYTES)
        except _WOULD_BLOCK:
            break
        except BaseException as exc:  # noqa: BLE001 - the library's own handling, unchanged
            _transport_log.exception("%s: Error receiving network data closing socket", self)
            err = KafkaConnectionError(exc)
            break
        if not data:
            _transport_log.error("%s: socket disconnected", self)
            err = KafkaConnectionError("socket disconnected")
            break
        received.append(data)
    return b"".join(received), err


def _read(self: Any, nbytes: int | None = None) -> bytes:
    """KafkaBytes.read with one copy instead of two (a bytearray slice, then bytes of it):
    a fetch response's record data is read this way, tens of MB per second."""
    if nbytes is None:
        nbytes = len(self) - self._idx
    start = self._idx
    self._idx = min(self._idx + nbytes, len(self))
    with memoryview(self) as view:
        return bytes(view[start : self._idx])


def install() -> bool:
    """Patch kafka-python's transports (idempotent); False where they are not the expected ones."""
    global _installed
    if _installed:
        return True
    try:
        from kafka.net import transport
        from kafka.protocol.frame import KafkaBytes
    except ImportError:
        logger.debug("kafka.net.transport not found: socket reads left as they are")
        return False
    classes = [getattr(transport, name, None) for name in ("KafkaTCPTransport", "KafkaSSLTransport")]
    if not all(c is not None and callable(getattr(c, "_sock_recv", None)) for c in classes) or not (
        issubclass(KafkaBytes, bytearray) and callable(getattr(KafkaBytes, "read", None))
    ):
        logger.debug("kafka-python transports differ from 3.0.x: socket reads left as they are")
        return False
    for cls in classes:
        cls._sock_recv = _sock_recv  # type: ignore[union-attr]
    KafkaBytes.read = _read
    _installed = True
    return True
