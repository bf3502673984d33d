"""DCTCP (Alizadeh et al., SIGCOMM 2010): a window cut in proportion to the ECN-marked fraction.

* Every window of data (the bytes in flight when the observation window opened) the sender
  folds the fraction `F` of ECN-echoed bytes into `alpha = (1 - g) * alpha + g * F`.
* The first ECN echo outside a reduction window cuts `W *= (1 - alpha / 2)` (with the alpha of
  that moment) and opens a reduction window of the new `W` bytes: further echoes in it do not
  cut again, and the window does not grow in it (TCP's CWR state).
* Otherwise each ACK grows the window by `mtu * acked / W`: one MSS per RTT.
* A loss (`on_nak`) halves the window, also at most once per reduction window.

The sender paces at line rate; only the window limits it. Defaults: g = 1/16 (the HPCC
simulator's), alpha starting at 1 (Linux's `dctcp_alpha_on_init`), initial window one
line-rate BDP as an RDMA sender starts at line rate; the marking threshold K = 30*bw/10 KB is
the switch's business, not the sender's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from fabric.cc.base import DEFAULT_MTU, NS_PER_S, CongestionControl, IntRecord, check

__all__ = ["Dctcp", "DctcpParams"]


@dataclass(frozen=True, slots=True)
class DctcpParams:
    """DCTCP parameters; a `None` window is derived from the line-rate BDP."""

    g: float = 1 / 16
    initial_alpha: float = 1.0
    init_window_bytes: int | None = None  # one line-rate BDP
    min_window_bytes: int | None = None  # one MTU
    max_window_bytes: int | None = None  # unbounded

    def __post_init__(self) -> None:
        check(0 < self.g <= 1, f"dctcp: g must be in (0, 1], got {self.g}")
        check(0 <= self.initial_alpha <= 1,
              f"dctcp: initial_alpha must be in [0, 1], got {self.initial_alpha}")
        for field in ("init_window_bytes", "min_window_bytes", "max_window_bytes"):
            value = getattr(self, field)
            check(value is None or value > 0,
                  f"dctcp: {field} must be positive (bytes) or None, got {value!r}")


class Dctcp(CongestionControl):
    """DCTCP for one flow: window in bytes, line-rate pacing."""

    name: ClassVar[str] = "dctcp"
    needs = frozenset({"ecn"})
    Params: ClassVar[type[DctcpParams]] = DctcpParams

    def __init__(self, line_rate_bps: int, base_rtt_ns: int, mtu: int = DEFAULT_MTU,
                 params: DctcpParams | None = None) -> None:
        super().__init__(line_rate_bps, base_rtt_ns, mtu, params)
        p: DctcpParams = self.params
        bdp = line_rate_bps * base_rtt_ns / NS_PER_S / 8
        self.min_window_bytes = float(p.min_window_bytes if p.min_window_bytes is not None
                                      else mtu)
        self.max_window_bytes = float(p.max_window_bytes if p.max_window_bytes is not None
                                      else float("inf"))
        init = p.init_window_bytes if p.init_window_bytes is not None else max(bdp, mtu)
        self._w = min(self.max_window_bytes, max(self.min_window_bytes, float(init)))
        self._alpha = p.initial_alpha
        self._acked = 0
        self._obs_end = self._w  # alpha is updated when this many bytes have been acked
        self._obs_acked = 0
        self._obs_marked = 0
        self._cwr_end: float | None = None  # bytes acked at which the reduction window closes

    @property
    def rate_bps(self) -> int:
        return self.line_rate_bps

    @property
    def window_bytes(self) -> int:
        return round(self._w)

    @property
    def alpha(self) -> float:
        """The estimate of the fraction of marked bytes."""
        return self._alpha

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               ecn_echo: bool = False, int_records: Sequence[IntRecord] | None = None) -> None:
        self._acked += acked_bytes
        self._obs_acked += acked_bytes
        if ecn_echo:
            self._obs_marked += acked_bytes
        in_cwr = self._cwr_end is not None and self._acked <= self._cwr_end
        if ecn_echo and not in_cwr:
            self._reduce(1 - self._alpha / 2)
        elif not in_cwr:
            self._w = min(self.max_window_bytes, self._w + self.mtu * acked_bytes / self._w)
        if self._acked >= self._obs_end:
            fraction = self._obs_marked / self._obs_acked if self._obs_acked else 0.0
            g = self.params.g
            self._alpha = (1 - g) * self._alpha + g * fraction
            self._obs_acked = self._obs_marked = 0
            self._obs_end = self._acked + self._w

    def on_nak(self, now_ns: int) -> None:
        if self._cwr_end is None or self._acked > self._cwr_end:
            self._reduce(0.5)

    def _reduce(self, factor: float) -> None:
        self._w = max(self.min_window_bytes, self._w * factor)
        self._cwr_end = self._acked + self._w
