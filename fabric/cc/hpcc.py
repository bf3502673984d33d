"""HPCC (Li et al., SIGCOMM 2019): a window driven by per-hop in-band telemetry.

Every ACK carries one `IntRecord` per hop. Against the previous record of the same hop the
sender computes, per hop,

    txRate = (tx_bytes - tx_bytes') * 8 / (ts - ts')
    u      = min(qlen, qlen') / (B * T) + txRate / B

(B the hop's line rate, T the base RTT, qlen in bytes so B * T is in bytes), takes the most
utilised hop's `u` and its interval `tau`, and smooths: `U = (1 - tau/T) * U + tau/T * u`
(tau capped at T). The window then follows

    W = W_c / (U / eta) + W_AI      if U >= eta or incStage >= maxStage (multiplicative)
    W = W_c + W_AI                  otherwise (additive, incStage += 1)

on every ACK, but the reference window W_c (and incStage) is only replaced once per RTT: when
the bytes acknowledged pass the mark set at the last reference update (the bytes then in flight,
at most W), which is the paper's `ack.seq > lastUpdateSeq` without sequence numbers. The pacing
rate is `W / T`. Defaults are the HPCC simulator's: eta 0.95, maxStage 0 (every update
multiplicative, as run.py sets it; the attribute default is 5), W_AI = T * 10*bw/25 Mb/s,
initial window one line-rate BDP, which is also the largest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from fabric.cc.base import DEFAULT_MTU, NS_PER_S, CongestionControl, IntRecord, check

__all__ = ["Hpcc", "HpccParams"]


@dataclass(frozen=True, slots=True)
class HpccParams:
    """HPCC parameters; `None` rates scale with the link rate."""

    eta: float = 0.95
    max_stage: int = 0
    rate_ai_bps: int | None = None  # 10 * bw / 25 Mb/s, i.e. W_AI = T * rate_ai
    min_rate_bps: int | None = None  # 100 Mb/s at 100 Gb/s
    initial_u: float = 1.0

    def __post_init__(self) -> None:
        check(0 < self.eta <= 1, f"hpcc: eta must be in (0, 1], got {self.eta}")
        check(isinstance(self.max_stage, int) and self.max_stage >= 0,
              f"hpcc: max_stage must be an integer >= 0, got {self.max_stage!r}")
        check(self.rate_ai_bps is None or self.rate_ai_bps > 0,
              f"hpcc: rate_ai_bps must be positive or None, got {self.rate_ai_bps!r}")
        check(self.min_rate_bps is None or self.min_rate_bps > 0,
              f"hpcc: min_rate_bps must be positive or None, got {self.min_rate_bps!r}")
        check(self.initial_u >= 0, f"hpcc: initial_u must be >= 0, got {self.initial_u}")


class Hpcc(CongestionControl):
    """HPCC for one flow: window `W` in bytes, paced at `W / T`."""

    name: ClassVar[str] = "hpcc"
    needs = frozenset({"int"})
    Params: ClassVar[type[HpccParams]] = HpccParams

    def __init__(self, line_rate_bps: int, base_rtt_ns: int, mtu: int = DEFAULT_MTU,
                 params: HpccParams | None = None) -> None:
        super().__init__(line_rate_bps, base_rtt_ns, mtu, params)
        p: HpccParams = self.params
        gbps = line_rate_bps / 1e9
        rate_ai = p.rate_ai_bps if p.rate_ai_bps is not None else 10 * gbps / 25 * 1e6
        min_rate = min(line_rate_bps, p.min_rate_bps if p.min_rate_bps is not None
                       else line_rate_bps / 1000)
        self.w_ai_bytes = rate_ai * base_rtt_ns / NS_PER_S / 8
        self.max_window_bytes = line_rate_bps * base_rtt_ns / NS_PER_S / 8
        self.min_window_bytes = min_rate * base_rtt_ns / NS_PER_S / 8
        self._w = self.max_window_bytes
        self._wc = self.max_window_bytes
        self._inc_stage = 0
        self._u = p.initial_u
        self._last_u: float | None = None
        self._hops: dict[int, IntRecord] = {}
        self._acked = 0
        self._update_mark: float | None = None

    # -- outputs -----------------------------------------------------------------------------

    @property
    def window_bytes(self) -> int:
        return round(self._w)

    @property
    def rate_bps(self) -> int:
        return min(self.line_rate_bps, round(self._w * 8 * NS_PER_S / self.base_rtt_ns))

    @property
    def reference_window_bytes(self) -> float:
        """W_c, the window the per-ACK updates scale (replaced once per RTT)."""
        return self._wc

    @property
    def utilisation(self) -> float:
        """The smoothed utilisation estimate U."""
        return self._u

    @property
    def last_sample_u(self) -> float | None:
        """The most utilised hop's `u` from the last ACK that carried a usable record."""
        return self._last_u

    @property
    def inc_stage(self) -> int:
        return self._inc_stage

    # -- events ------------------------------------------------------------------------------

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               ecn_echo: bool = False, int_records: Sequence[IntRecord] | None = None) -> None:
        self._acked += acked_bytes
        if not int_records:
            return
        if self._update_mark is None:  # first feedback: nothing to difference against yet
            for record in int_records:
                self._hops[record.hop] = record
            self._update_mark = self._acked + self._w
            return
        full_update = self._acked > self._update_mark
        t = self.base_rtt_ns
        u_max = -1.0
        tau = 0
        for record in int_records:
            prev = self._hops.get(record.hop)
            self._hops[record.hop] = record
            if prev is None or record.ts_ns <= prev.ts_ns:
                continue
            dt = record.ts_ns - prev.ts_ns
            tx_rate = (record.tx_bytes - prev.tx_bytes) * 8 * NS_PER_S / dt
            bdp_bytes = record.line_rate_bps * t / NS_PER_S / 8
            u = (min(record.qlen_bytes, prev.qlen_bytes) / bdp_bytes
                 + tx_rate / record.line_rate_bps)
            if u > u_max:
                u_max, tau = u, dt
        if u_max < 0:  # no hop had a newer record
            return
        self._last_u = u_max
        tau = min(tau, t)
        self._u = (1 - tau / t) * self._u + tau / t * u_max
        p: HpccParams = self.params
        if self._u >= p.eta or self._inc_stage >= p.max_stage:
            w = self._wc / (self._u / p.eta) + self.w_ai_bytes if self._u > 0 else float("inf")
            stage = 0
        else:
            w = self._wc + self.w_ai_bytes
            stage = self._inc_stage + 1
        self._w = min(self.max_window_bytes, max(self.min_window_bytes, w))
        if full_update:
            self._wc = self._w
            self._inc_stage = stage
            self._update_mark = self._acked + self._w
