"""Path figures between two nodes, in fabric units: what "ideal" means for a flow.

HPCC's simulator (and the papers that use it) report flow completion time as a *slowdown*
against the FCT the flow would have alone on an idle network:

    ideal = base RTT + bytes * 8 / bottleneck rate

with the base RTT the round trip of one full-size packet over the path (the propagation delay
of every hop, both ways, plus each hop's serialisation of that packet). `path_figures` works
those out over a shortest (hop-count) path; with ECMP every equal-cost path has the same hop
count, and a leaf-spine's equal-cost paths have equal figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabric.topology.document import Topology
from fabric.topology.graph import adjacency, search

__all__ = ["PathFigures", "path_figures", "shortest_path"]

NS_PER_S = 1_000_000_000
ACK_BYTES = 64  # an ACK's wire size: the return half of the base RTT serialises this


@dataclass(frozen=True)
class PathFigures:
    """hops: links crossed; base_rtt_ns: one MTU packet there and an ACK back on an idle path;
    bottleneck_bps: the slowest forward direction (None when a hop is unshaped);
    first_hop_bps: the sender's own link (its NIC rate), None if unshaped; mtu: smallest."""

    hops: int
    base_rtt_ns: int
    bottleneck_bps: int | None
    first_hop_bps: int | None
    mtu: int

    def ideal_fct_ns(self, nbytes: int) -> float:
        """The flow's completion time alone on the path (base RTT + bytes at the bottleneck)."""
        if not self.bottleneck_bps:
            return float(self.base_rtt_ns)
        return self.base_rtt_ns + nbytes * 8 * NS_PER_S / self.bottleneck_bps


def shortest_path(topo: Topology, src: str, dst: str) -> list[str]:
    """One shortest path (hop count), lowest-named neighbour first: deterministic.
    KeyError when `src` and `dst` are not connected."""
    adj = adjacency(topo.links)
    return search(src, lambda n: sorted(adj.get(n, ()))).path(dst)


def path_figures(topo: Topology, src: str, dst: str) -> PathFigures:
    """Figures of a shortest path from `src` to `dst` (KeyError if there is none)."""
    path = shortest_path(topo, src, dst)
    rtt = 0.0
    rates: list[int | None] = []
    mtu = min((topo.shape(a, b).mtu for a, b in zip(path, path[1:], strict=False)),
              default=1500)
    for a, b in zip(path, path[1:], strict=False):
        fwd, back = topo.shape(a, b), topo.shape(b, a)
        rates.append(fwd.rate_bps)
        rtt += fwd.delay_ns + back.delay_ns
        if fwd.rate_bps:
            rtt += mtu * 8 * NS_PER_S / fwd.rate_bps
        if back.rate_bps:
            rtt += ACK_BYTES * 8 * NS_PER_S / back.rate_bps
    shaped = [r for r in rates if r]
    bottleneck = min(shaped) if shaped and len(shaped) == len(rates) else None
    return PathFigures(hops=len(path) - 1, base_rtt_ns=max(1, round(rtt)),
                       bottleneck_bps=bottleneck, first_hop_bps=rates[0] if rates else None,
                       mtu=mtu)
