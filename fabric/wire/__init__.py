"""Frame codecs, sans-IO: msgpack-header frames for streams, a reliable bulk UDP transfer."""

from __future__ import annotations

from fabric.wire.frames import (
    CLOSED,
    MAX_HEADER,
    NEED_DATA,
    FrameDecoder,
    Header,
    Payload,
    ProtocolError,
    encode_frame,
    encode_header,
)
from fabric.wire.udp import (
    ACK,
    DATA,
    FIN,
    HEADER_SIZE,
    MAGIC,
    NACK,
    Segment,
    UdpReceiver,
    UdpSender,
    mss_for_mtu,
    pack_ack,
    pack_segment,
    unpack_nacks,
    unpack_segment,
)

__all__ = [
    "ACK",
    "CLOSED",
    "DATA",
    "FIN",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_HEADER",
    "NACK",
    "NEED_DATA",
    "FrameDecoder",
    "Header",
    "Payload",
    "ProtocolError",
    "Segment",
    "UdpReceiver",
    "UdpSender",
    "encode_frame",
    "encode_header",
    "mss_for_mtu",
    "pack_ack",
    "pack_segment",
    "unpack_nacks",
    "unpack_segment",
]
