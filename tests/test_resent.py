"""What the transports resent, per failure: the kernel's TCP byte counts (`tcp_info`) read
right, and node counter samples summed over a failure's window."""

from __future__ import annotations

import socket

from fabric.node.runtime import tcp_info_bytes
from fabric.run.events import _resent_words, resent


def test_tcp_info_gives_the_bytes_sent_and_retransmitted() -> None:
    """The offsets of tcpi_bytes_sent and tcpi_bytes_retrans: a connection over loopback
    sent exactly what was written, and resent nothing."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    with lsock, socket.create_connection(lsock.getsockname()) as c:
        conn, _ = lsock.accept()
        with conn:
            c.sendall(b"x" * 100_000)
            got = 0
            while got < 100_000:
                got += len(conn.recv(65536))
            assert tcp_info_bytes(c) == (100_000, 0)
            assert tcp_info_bytes(conn) == (0, 0)
    assert tcp_info_bytes(c) == (0, 0)  # closed: nothing to read


def test_resent_sums_each_nodes_counters_over_the_window() -> None:
    counters = {
        "a": [(10, {"tcp_bytes_retrans": 0}), (20, {"tcp_bytes_retrans": 1000}),
              (30, {"tcp_bytes_retrans": 5000}), (40, {"tcp_bytes_retrans": 5200})],
        "b": [(15, {"tcp_bytes_retrans": 0, "roce_retransmitted": 3}),
              (35, {"tcp_bytes_retrans": 0, "roce_retransmitted": 10})],
    }
    # from the failure at 20 until the next at 35: a's 1000 -> 5000, b's 3 -> 10
    assert resent(counters, 20, 35) == {"tcp_bytes_retrans": 4000, "roce_retransmitted": 7}
    # to the end of the run
    assert resent(counters, 35, None) == {"tcp_bytes_retrans": 200, "roce_retransmitted": 0}
    # before the first failure: from the start (0 before the first sample)
    assert resent(counters, None, 20) == {"tcp_bytes_retrans": 1000, "roce_retransmitted": 3}
    assert resent({}, 0, None) is None


def test_the_words_for_what_was_resent() -> None:
    assert _resent_words({"tcp_bytes_retrans": 2048, "roce_retransmitted": 0,
                          "udp_retransmitted": 4}) == "2 KiB by TCP, 4 UDP packets"
    assert _resent_words({"tcp_bytes_retrans": 0}) == "nothing"
    assert _resent_words(None) == ""
