"""An example congestion-control plug-in for fabric: additive increase, multiplicative
decrease on ECN echoes, at most one cut per round trip. A window-based policy paced at the
line rate, in about 60 lines: see docs/cc-plugins.md.

Use it from a topology class (`cc: ./aimd.py:Aimd`, relative to the topology file) or
compare it with the built-ins:

    fabric run topologies/roce-incast.yaml --cc dcqcn,examples/cc/aimd.py:Aimd
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fabric.cc import CongestionControl, CongestionControlError, IntRecord


@dataclass(frozen=True)
class AimdParams:
    """Parameters, each with its default; a topology class overrides them in `cc_params`."""

    beta: float = 0.5  # the share of the window a cut removes
    increase_mtus: float = 1.0  # window growth per round trip, in packets

    def __post_init__(self) -> None:
        if not 0 < self.beta < 1:
            raise CongestionControlError(f"aimd: beta must be in (0, 1), got {self.beta}")
        if self.increase_mtus <= 0:
            raise CongestionControlError(
                f"aimd: increase_mtus must be positive, got {self.increase_mtus}")


class Aimd(CongestionControl):
    """AIMD on ECN echoes, one cut per round trip; starts at one bandwidth-delay product."""

    name = "aimd"
    Params = AimdParams
    needs = frozenset({"ecn"})  # `fabric check` warns when nothing marks its class

    def __init__(self, line_rate_bps: int, base_rtt_ns: int, mtu: int = 1000,
                 params: AimdParams | None = None) -> None:
        super().__init__(line_rate_bps, base_rtt_ns, mtu, params)
        bdp = line_rate_bps * base_rtt_ns / 8e9
        self._w = max(float(mtu), bdp)
        self._next_cut_ns = 0  # no second cut before a round trip has passed

    @property
    def rate_bps(self) -> int:
        return self.line_rate_bps  # window-based: pace at the line rate

    @property
    def window_bytes(self) -> int:
        return round(self._w)

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               ecn_echo: bool = False, int_records: Sequence[IntRecord] | None = None) -> None:
        if ecn_echo:
            self._cut(now_ns, rtt_ns)
        else:
            grow = self.params.increase_mtus * self.mtu * acked_bytes / self._w
            self._w += grow

    def on_cnp(self, now_ns: int) -> None:
        self._cut(now_ns, None)

    def on_nak(self, now_ns: int) -> None:
        self._cut(now_ns, None)

    def _cut(self, now_ns: int, rtt_ns: int | None) -> None:
        if now_ns < self._next_cut_ns:
            return
        self._w = max(float(self.mtu), self._w * (1 - self.params.beta))
        self._next_cut_ns = now_ns + (rtt_ns or self.base_rtt_ns)
