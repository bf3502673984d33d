"""The compute side of PD serving with remote prefill, as a discrete-event model. Sans-IO.

Two steps, so that the network in between can be real:

1. `PdSimulator.plan(requests)` walks the requests in arrival order, asks the router where each
   prefills (showing it a `ClusterState` snapshot), and places it: a prefill pool is a set of
   instances, each serving one request at a time, FIFO; a request takes the instance that frees
   first (ties: lowest index), starts at `max(arrival, free)` and runs
   `profile.seconds(uncached_tokens) / instance_type.prefill_speed`. It also picks the decode
   instance the KV goes to. Result: one `PrefillJob` per request, with the KV bytes to move.
2. `PdSimulator.account(jobs, kv_arrival_s)` takes the time each request's KV landed on its
   decode instance (measured on a real link later; `fifo_link_arrivals` models one in tests),
   runs the decode instances, and returns a `Report`.

**The planner's egress view.** Remote KV is queued on the cross-cluster link at the prefill's
finish time and drained at `egress_bps` (a fluid, work-conserving queue). At a decision time the
planner knows only transfers whose prefill has finished by then, as a live scheduler would:
`egress_util` is the share of the last `util_window_s` the link was busy, `egress_queue_bytes`
the backlog. Queue delays are how long a prefill sent now would wait for the pool's first free
instance (`inf` for an empty pool).

**Decode.** Each decode instance (of the local type) runs continuous batching with up to
`max_batch` requests; a request needs a slot to start (FIFO by KV arrival). One decode step
yields one token for every request in the batch and takes `base_s + per_request_s x batch`
(weight reads plus a per-sequence share; context length is ignored, which suits the hybrid
model's mostly fixed-size state). Between arrivals and completions the batch is constant, so
the model is exact in "tokens served per request" (a fluid version of the steps). TTFT is
arrival -> KV arrival, slot wait, one step. The defaults (12.5 ms + 0.5 ms x batch, 24 slots:
40.8 tokens/s at a full batch, 0.96 requests/s per instance) are fitted to the seed's H20
decode capacity (1.04 instance-seconds per request, derived in `kv/prefill.py`) and its 40 tokens/s
SLO.

**The measured window** defaults to the arrival times from the 20th percentile request to the
last one: it skips the warm-up while the decode batches fill, and under overload it reports the
bottleneck's rate, not the offered load.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from fabric.errors import FabricError
from fabric.kv.prefill import H20, H200, InstanceType, PrefillProfile
from fabric.metrics.report import format_table
from fabric.prfaas.router import LOCAL, REMOTE, ClusterState, Router
from fabric.prfaas.workload import Request

__all__ = [
    "DecodeModel",
    "Outcome",
    "PdSimulator",
    "PrefillJob",
    "Report",
    "fifo_link_arrivals",
    "table",
]


@dataclass(frozen=True)
class DecodeModel:
    """Per-step decode time `base_s + per_request_s * batch`, up to `max_batch` requests, and the
    decode SLO in tokens/s per request. Defaults: one 8 x H20 instance (module doc)."""

    base_s: float = 0.0125
    per_request_s: float = 0.0005
    max_batch: int = 24
    slo_tps: float = 40.0

    def __post_init__(self) -> None:
        if not self.base_s > 0 or self.per_request_s < 0 or self.max_batch < 1:
            raise FabricError("decode model needs base_s > 0, per_request_s >= 0, max_batch >= 1")

    def step_s(self, batch: int) -> float:
        """Seconds of one decode step with `batch` requests in the batch."""
        return self.base_s + self.per_request_s * batch


@dataclass(frozen=True)
class PrefillJob:
    """One request's placement: prefill pool and instance, times, KV bytes, decode instance."""

    request: Request
    where: str  # "local" | "remote"
    instance: int
    start_s: float
    finish_s: float
    kv_bytes: int
    decode_instance: int

    @property
    def queue_s(self) -> float:
        """Seconds the request waited for its prefill instance."""
        return self.start_s - self.request.arrival_s


@dataclass(frozen=True)
class Outcome:
    """What happened to one request, from arrival to its last token."""

    id: int
    where: str
    arrival_s: float
    uncached_tokens: int
    output_tokens: int
    prefill_finish_s: float
    kv_arrival_s: float
    decode_start_s: float
    first_token_s: float
    finish_s: float

    @property
    def ttft_s(self) -> float:
        """Arrival to first token: prefill (with queueing), KV transfer, slot wait, one step."""
        return self.first_token_s - self.arrival_s

    @property
    def decode_tps(self) -> float:
        """Output tokens per second while decoding."""
        span = self.finish_s - self.decode_start_s
        return math.inf if span <= 0 else self.output_tokens / span


@dataclass(frozen=True)
class Report:
    """One run's figures. Rates in the measured window; routing and bytes over the whole run."""

    policy: str
    requests: int
    measured: int
    window_s: tuple[float, float]
    throughput_rps: float
    mean_ttft_s: float
    p90_ttft_s: float
    slo_attainment: float
    offloaded_fraction: float
    mean_offloaded_tokens: float
    kv_bytes_local: int
    kv_bytes_remote: int
    egress_mean_gbps: float
    egress_peak_gbps: float
    outcomes: tuple[Outcome, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self, *, outcomes: bool = False) -> dict:
        """Plain data (JSON-ready apart from inf/nan); per-request outcomes only on request."""
        d = asdict(self)
        d["window_s"] = list(self.window_s)
        if outcomes:
            d["outcomes"] = [{**asdict(o), "ttft_s": o.ttft_s, "decode_tps": o.decode_tps}
                             for o in self.outcomes]
        else:
            del d["outcomes"]
        return d


def table(reports: Mapping[str, Report]) -> str:
    """An aligned comparison table, one row per policy (in the mapping's order)."""
    header = ["policy", "req/s", "TTFT mean s", "TTFT P90 s", "SLO %", "offload %",
              "offl. tokens", "egress Gb/s", "peak Gb/s", "remote KV GB"]
    rows = []
    for name, r in reports.items():
        rows.append([
            name, f"{r.throughput_rps:.3f}", f"{r.mean_ttft_s:.2f}", f"{r.p90_ttft_s:.2f}",
            f"{100 * r.slo_attainment:.1f}", f"{100 * r.offloaded_fraction:.1f}",
            f"{r.mean_offloaded_tokens:,.0f}", f"{r.egress_mean_gbps:.2f}",
            f"{r.egress_peak_gbps:.2f}", f"{r.kv_bytes_remote / 1e9:,.1f}"])
    return format_table(rows, header)


class _EgressView:
    """The planner's fluid model of the egress link: backlog and recent busy time."""

    def __init__(self, rate_bps: float, window_s: float) -> None:
        self.rate = rate_bps
        self.window = window_s
        self.pending: list[tuple[float, int, int]] = []  # (ready_s, seq, bytes) heap
        self.seq = 0
        self.backlog_bits = 0.0
        self.t = -math.inf
        self.busy: deque[list[float]] = deque()  # merged [start, end] intervals

    def add(self, ready_s: float, nbytes: int) -> None:
        heapq.heappush(self.pending, (ready_s, self.seq, nbytes))
        self.seq += 1

    def _drain(self, to: float) -> None:
        if self.backlog_bits > 0 and to > self.t:
            sent = min(self.backlog_bits, self.rate * (to - self.t))
            start, end = self.t, self.t + sent / self.rate
            if self.busy and self.busy[-1][1] >= start - 1e-12:
                self.busy[-1][1] = end
            else:
                self.busy.append([start, end])
            self.backlog_bits -= sent
            if self.backlog_bits < 1e-6:
                self.backlog_bits = 0.0
        self.t = max(self.t, to)

    def advance(self, now: float) -> None:
        while self.pending and self.pending[0][0] <= now:
            ready, _, nbytes = heapq.heappop(self.pending)
            self._drain(ready)
            self.backlog_bits += nbytes * 8
        self._drain(now)
        lo = now - self.window
        while self.busy and self.busy[0][1] <= lo:
            self.busy.popleft()

    def utilisation(self, now: float) -> float:
        lo = now - self.window
        busy = sum(min(e, now) - max(s, lo) for s, e in self.busy if e > lo and s < now)
        return min(max(busy / self.window, 0.0), 1.0)

    def queue_bytes(self) -> int:
        return int(math.ceil(self.backlog_bits / 8))


class PdSimulator:
    """Local and remote prefill pools plus local decode instances; see the module doc.

    `kv_bytes_fn(uncached_tokens)` gives the KV bytes a prefill ships to decode (the cached prefix
    is assumed already on the decode side, per the seed's "incremental uncached prefill"), e.g.
    `lambda t: transfer_bytes(get_model("prfaas-hybrid-1t"), t)`.
    """

    def __init__(
        self,
        local_prefill: int,
        remote_prefill: int,
        decode: int,
        profile: PrefillProfile,
        local_type: InstanceType = H20,
        remote_type: InstanceType = H200,
        router: Router | None = None,
        kv_bytes_fn: Callable[[int], int] | None = None,
        *,
        egress_bps: float = 100e9,
        egress_rtt_s: float = 0.005,
        local_bps: float = 800e9,
        util_window_s: float = 10.0,
        decode_model: DecodeModel | None = None,
    ) -> None:
        if local_prefill < 0 or remote_prefill < 0 or local_prefill + remote_prefill == 0:
            raise FabricError(f"need prefill instances: local_prefill={local_prefill}, "
                              f"remote_prefill={remote_prefill}")
        if decode < 1:
            raise FabricError(f"need at least one decode instance, not {decode}")
        if router is None or kv_bytes_fn is None:
            raise FabricError("PdSimulator needs a router (make_router(...)) and a kv_bytes_fn")
        if not egress_bps > 0 or not local_bps > 0 or not util_window_s > 0:
            raise FabricError("egress_bps, local_bps and util_window_s must be > 0")
        self.local_prefill = local_prefill
        self.remote_prefill = remote_prefill
        self.decode = decode
        self.profile = profile
        self.local_type = local_type
        self.remote_type = remote_type
        self.router = router
        self.kv_bytes_fn = kv_bytes_fn
        self.egress_bps = egress_bps
        self.egress_rtt_s = egress_rtt_s
        self.local_bps = local_bps
        self.util_window_s = util_window_s
        self.decode_model = decode_model or DecodeModel()

    # -- step 1 -------------------------------------------------------------------------------

    def plan(self, requests: Iterable[Request]) -> list[PrefillJob]:
        """Place every request (in arrival order); jobs come back in that order."""
        reqs = sorted(requests, key=lambda r: (r.arrival_s, r.id))
        ids = [r.id for r in reqs]
        if len(set(ids)) != len(ids):
            raise FabricError("request ids must be unique")
        free = {LOCAL: [0.0] * self.local_prefill, REMOTE: [0.0] * self.remote_prefill}
        speed = {LOCAL: self.local_type.prefill_speed, REMOTE: self.remote_type.prefill_speed}
        egress = _EgressView(self.egress_bps, self.util_window_s)
        dm = self.decode_model
        est_finish: list[list[float]] = [[] for _ in range(self.decode)]
        jobs = []
        for req in reqs:
            now = req.arrival_s
            egress.advance(now)
            state = ClusterState(
                egress_util=egress.utilisation(now),
                remote_queue_s=_wait(free[REMOTE], now),
                local_queue_s=_wait(free[LOCAL], now),
                egress_queue_bytes=egress.queue_bytes())
            where = self.router.route(req, now, state)
            if where not in (LOCAL, REMOTE):
                raise FabricError(f"router {self.router.name!r} returned {where!r} for request "
                                  f"{req.id}: a router must return 'local' or 'remote'")
            pool = free[where]
            if not pool:
                raise FabricError(f"router {self.router.name!r} sent request {req.id} to the "
                                  f"{where} pool, which has no instances: give it instances or "
                                  f"use a policy that never routes there")
            inst = min(range(len(pool)), key=lambda i: (pool[i], i))
            start = max(now, pool[inst])
            finish = start + self.profile.seconds(req.uncached_tokens) / speed[where]
            pool[inst] = finish
            kv = int(self.kv_bytes_fn(req.uncached_tokens))
            if where == REMOTE:
                egress.add(finish, kv)
                ready = finish + kv * 8 / self.egress_bps + self.egress_rtt_s
            else:
                ready = finish + kv * 8 / self.local_bps
            d = self._pick_decode(est_finish, ready, req.output_tokens * dm.step_s(dm.max_batch))
            jobs.append(PrefillJob(request=req, where=where, instance=inst, start_s=start,
                                   finish_s=finish, kv_bytes=kv, decode_instance=d))
        return jobs

    def _pick_decode(self, est_finish: list[list[float]], ready: float, dur: float) -> int:
        """The decode instance with the fewest requests expected in flight at `ready`."""
        best, best_n = 0, math.inf
        for d, fin in enumerate(est_finish):
            n = len(fin) - bisect.bisect_right(fin, ready)
            if n < best_n:
                best, best_n = d, n
        # Expected start: at `ready` if a slot is free then, else when enough of the requests
        # still in flight have finished (finish times are kept sorted).
        fin = est_finish[best]
        max_batch = self.decode_model.max_batch
        start = ready if best_n < max_batch else fin[len(fin) - max_batch]
        bisect.insort(fin, start + dur)
        return best

    # -- step 2 -------------------------------------------------------------------------------

    def account(self, jobs: Sequence[PrefillJob], kv_arrival_s: Mapping[int, float], *,
                window: tuple[float, float] | None = None, bin_s: float = 1.0) -> Report:
        """Decode with the given KV arrival times (request id -> seconds) and sum up."""
        if not jobs:
            raise FabricError("no jobs to account for: plan some requests first")
        for j in jobs:
            rid = j.request.id
            if rid not in kv_arrival_s:
                raise FabricError(f"no KV arrival time for request {rid}: kv_arrival_s needs "
                                  f"one per planned job")
            if kv_arrival_s[rid] < j.finish_s - 1e-9:
                raise FabricError(f"request {rid}: KV arrived at {kv_arrival_s[rid]:.6f} s, "
                                  f"before its prefill finished at {j.finish_s:.6f} s")
        outcomes = self._decode(jobs, kv_arrival_s)
        arrivals = sorted(j.request.arrival_s for j in jobs)
        if window is None:
            lo, hi = arrivals[len(arrivals) // 5], arrivals[-1]
            if hi <= lo:
                lo, hi = arrivals[0], max(o.finish_s for o in outcomes)
        else:
            lo, hi = window
        if not hi > lo:
            raise FabricError(f"measured window ({lo}, {hi}) is empty: it must end after it "
                              f"starts")
        done = sum(1 for o in outcomes if lo <= o.finish_s <= hi)
        measured = [o for o in outcomes if lo <= o.arrival_s <= hi] or list(outcomes)
        ttft = np.array([o.ttft_s for o in measured])
        slo = sum(1 for o in measured if o.decode_tps >= self.decode_model.slo_tps - 1e-9)
        remote = [j for j in jobs if j.where == REMOTE]
        transfers = []
        for j in remote:  # on the link for its last bits/egress_bps before arrival - rtt
            end = max(kv_arrival_s[j.request.id] - self.egress_rtt_s, j.finish_s)
            start = max(end - j.kv_bytes * 8 / self.egress_bps, j.finish_s)
            transfers.append((start, end, j.kv_bytes * 8))
        mean_gbps, peak_gbps = _egress_rates(transfers, lo, hi, bin_s)
        return Report(
            policy=self.router.name,
            requests=len(jobs),
            measured=len(measured),
            window_s=(lo, hi),
            throughput_rps=done / (hi - lo),
            mean_ttft_s=float(ttft.mean()),
            p90_ttft_s=float(np.percentile(ttft, 90)),
            slo_attainment=slo / len(measured),
            offloaded_fraction=len(remote) / len(jobs),
            mean_offloaded_tokens=(float(np.mean([j.request.uncached_tokens for j in remote]))
                                   if remote else 0.0),
            kv_bytes_local=sum(j.kv_bytes for j in jobs if j.where == LOCAL),
            kv_bytes_remote=sum(j.kv_bytes for j in remote),
            egress_mean_gbps=mean_gbps,
            egress_peak_gbps=peak_gbps,
            outcomes=tuple(outcomes),
        )

    def _decode(self, jobs: Sequence[PrefillJob], kv_arrival_s: Mapping[int, float]
                ) -> list[Outcome]:
        dm = self.decode_model
        by_inst: dict[int, list[PrefillJob]] = {}
        for j in jobs:
            if not 0 <= j.decode_instance < self.decode:
                raise FabricError(f"request {j.request.id}: decode instance {j.decode_instance} "
                                  f"out of range 0..{self.decode - 1}")
            by_inst.setdefault(j.decode_instance, []).append(j)
        result: dict[int, Outcome] = {}
        for inst_jobs in by_inst.values():
            queue = sorted(inst_jobs, key=lambda j: (kv_arrival_s[j.request.id], j.request.id))
            i, n = 0, len(queue)
            waiting: deque[PrefillJob] = deque()
            active: list[tuple[float, int]] = []  # (served-tokens target, request id)
            started: dict[int, tuple[PrefillJob, float, float]] = {}
            t, served = 0.0, 0.0  # served: tokens each active request has received so far
            while i < n or waiting or active:
                t_ready = kv_arrival_s[queue[i].request.id] if i < n else math.inf
                t_done = (t + (active[0][0] - served) * dm.step_s(len(active))
                          if active else math.inf)
                t_next = min(t_ready, t_done)
                if active:
                    served += (t_next - t) / dm.step_s(len(active))
                    if t_next == t_done:
                        served = max(served, active[0][0])
                t = t_next
                while active and active[0][0] <= served + 1e-9:
                    _, rid = heapq.heappop(active)
                    job, start, first = started.pop(rid)
                    result[rid] = _outcome(job, kv_arrival_s[rid], start, first, t)
                while i < n and kv_arrival_s[queue[i].request.id] <= t:
                    waiting.append(queue[i])
                    i += 1
                joined = []
                while waiting and len(active) < dm.max_batch:
                    job = waiting.popleft()
                    heapq.heappush(active, (served + job.request.output_tokens, job.request.id))
                    joined.append(job)
                if joined:
                    first = t + dm.step_s(len(active))
                    for job in joined:
                        started[job.request.id] = (job, t, first)
        return [result[j.request.id] for j in jobs]

    # -- convenience --------------------------------------------------------------------------

    def simulate(self, requests: Iterable[Request], **account_kw: object) -> Report:
        """plan -> `fifo_link_arrivals` at this simulator's link figures -> account."""
        jobs = self.plan(requests)
        arrivals = fifo_link_arrivals(jobs, self.egress_bps, rtt_s=self.egress_rtt_s,
                                      local_bps=self.local_bps)
        return self.account(jobs, arrivals, **account_kw)  # type: ignore[arg-type]


def _wait(pool: list[float], now: float) -> float:
    return max(min(pool) - now, 0.0) if pool else math.inf


def _outcome(job: PrefillJob, kv_at: float, start: float, first: float, finish: float
             ) -> Outcome:
    r = job.request
    return Outcome(id=r.id, where=job.where, arrival_s=r.arrival_s,
                   uncached_tokens=r.uncached_tokens, output_tokens=r.output_tokens,
                   prefill_finish_s=job.finish_s, kv_arrival_s=kv_at, decode_start_s=start,
                   first_token_s=first, finish_s=finish)


def fifo_link_arrivals(jobs: Sequence[PrefillJob], egress_bps: float, *, rtt_s: float = 0.0,
                       local_bps: float = 800e9, local_rtt_s: float = 0.0) -> dict[int, float]:
    """An analytic network: KV arrival time per request id.

    Remote KV crosses one shared egress link, whole transfers FIFO in prefill-finish order:
    `start = max(finish, link free)`, `arrival = start + bytes*8/egress_bps + rtt_s`. Local KV
    moves over each decode node's own RDMA NIC without contention:
    `finish + bytes*8/local_bps + local_rtt_s`. No pipelining of transfer with prefill.
    """
    out: dict[int, float] = {}
    link_free = -math.inf
    for j in sorted(jobs, key=lambda j: (j.finish_s, j.request.id)):
        if j.where == REMOTE:
            start = max(j.finish_s, link_free)
            link_free = start + j.kv_bytes * 8 / egress_bps
            out[j.request.id] = link_free + rtt_s
        else:
            out[j.request.id] = j.finish_s + j.kv_bytes * 8 / local_bps + local_rtt_s
    return out


def _egress_rates(transfers: Sequence[tuple[float, float, float]], lo: float, hi: float,
                  bin_s: float) -> tuple[float, float]:
    """Mean and peak Gbit/s over [lo, hi], each transfer's bits spread evenly over its time on
    the link; the peak is the busiest `bin_s` bin."""
    if not transfers:
        return 0.0, 0.0
    nbins = max(1, math.ceil((hi - lo) / bin_s - 1e-9))
    edges = [lo + k * bin_s for k in range(nbins)] + [hi]
    events: list[tuple[float, float, float]] = []  # (time, slope change, step)
    for a, b, bits in transfers:
        if b - a <= 1e-12:
            events.append((a, 0.0, bits))
        else:
            rate = bits / (b - a)
            events.append((a, rate, 0.0))
            events.append((b, -rate, 0.0))
    events.sort()
    cum = []
    total = slope = 0.0
    t = min(events[0][0], lo)
    k = 0
    for e in edges:
        while k < len(events) and events[k][0] <= e:
            et, ds, step = events[k]
            total += slope * (et - t) + step
            slope += ds
            t = et
            k += 1
        total += slope * (e - t)
        t = e
        cum.append(total)
    mean = (cum[-1] - cum[0]) / (hi - lo) / 1e9
    peak = max((cum[i + 1] - cum[i]) / (edges[i + 1] - edges[i])
               for i in range(len(edges) - 1)) / 1e9
    return mean, peak
