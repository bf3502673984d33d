"""The one kernel adapter: the only module that imports pyroute2.

Synchronous, run outside trio (the CLI calls it before/after any event loop). It keeps one
netlink handle per namespace, opened by entering the namespace on this thread with setns(2) and
leaving again: no forked helper per namespace (pyroute2's `NetNS` forks one, which costs ~45 ms a
namespace here; entering and opening costs ~1 ms). setns(2) acts on the calling thread only, so
a `Kernel` must be used from the thread that made it.

Units: steps carry our integer units; conversion to pyroute2's (netem microseconds and percent,
tbf bit rates and bytes) happens here and nowhere else.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import KernelError
from ..plan import (
    AddAddress,
    AddNamespace,
    AddRoute,
    AddTun,
    AddVeth,
    SetNetem,
    SetOffloadsOff,
    SetSysctl,
    SetTbf,
    SetUp,
    Step,
    WriteHosts,
)
from ..topology.model import Shape, TrafficClass
from . import tun
from .daemon import interrupts_held
from .tun import create_persistent_tun, setns

NETNS_RUN_DIR = Path(tun.NETNS_RUN_DIR)
NETNS_ETC_DIR = Path("/etc/netns")

_libc = ctypes.CDLL(None, use_errno=True)  # handed to pyroute2's netns helpers


def _setns(fd: int) -> None:
    try:
        setns(fd)
    except OSError as e:
        raise KernelError(str(e)) from None


def probe_qdisc_kinds(attempts: dict[str, dict]) -> dict[str, str | None]:
    """Add each qdisc kind (with its pyroute2 arguments) on the loopback of a namespace that
    has no name: a forked child unshares one, tries them, reports, and exits, and the
    namespace dies with it. Nothing is bind-mounted, so no kill point leaves anything behind.
    kind -> None if the kernel took it, else why not."""
    import json

    r, w = os.pipe()
    with interrupts_held():  # an interrupt lands after the fork, here, not in a fork handler
        pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(r)
            if _libc.unshare(tun.CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            results: dict[str, str | None] = {}
            with IPRoute() as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                for kind, kw in attempts.items():
                    try:
                        ipr.tc("add", kind, lo, handle=0x00010000, **dict(kw))  # it pops keys
                    except Exception as e:  # noqa: BLE001 - any failure means "not usable"
                        c = getattr(e, "code", None)
                        results[kind] = ("qdisc kind not in this kernel" if c == errno.ENOENT
                                         else os.strerror(c) if isinstance(c, int) else str(e))
                        continue
                    results[kind] = None
                    with contextlib.suppress(Exception):  # free the root for the next kind
                        ipr.tc("del", kind, lo, handle=0x00010000, **dict(kw))
            os.write(w, json.dumps(results).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported by the parent
            os.write(w, json.dumps({"": f"{e}"}).encode())
        finally:
            os._exit(code)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as fh:
            data = json.loads(fh.read() or b"{}")
    finally:
        os.waitpid(pid, 0)
    if "" in data or not data:
        why = data.get("", "the probe process died")
        raise KernelError(f"probing qdiscs in a new network namespace: {why} "
                          "(needs root: CAP_SYS_ADMIN)")
    return data


class Kernel:
    """Applies plan steps, one netlink handle per namespace. Teardown is net/lifecycle's: it
    removes what a fabric made by the names that carry its run id."""

    def __init__(self) -> None:
        self._thread = threading.get_ident()
        self._root = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._handles: dict[str, IPRoute] = {}
        self._ifindex: dict[tuple[str, str], int] = {}

    # ---- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()
        self._ifindex.clear()
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def inside(self, ns: str) -> Iterator[None]:
        """Run the body with this thread inside namespace `ns`."""
        assert threading.get_ident() == self._thread, "Kernel used from another thread"
        try:
            fd = os.open(NETNS_RUN_DIR / ns, os.O_RDONLY)
        except FileNotFoundError:
            raise KernelError(f"network namespace {ns} does not exist") from None
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(self._root)

    def handle(self, ns: str) -> IPRoute:
        h = self._handles.get(ns)
        if h is None:
            with self.inside(ns):
                h = IPRoute()
            self._handles[ns] = h
        return h

    def ifindex(self, ns: str, dev: str) -> int:
        key = (ns, dev)
        idx = self._ifindex.get(key)
        if idx is None:
            found = self.handle(ns).link_lookup(ifname=dev)
            if not found:
                raise KernelError(f"{ns}: no device {dev}")
            idx = self._ifindex[key] = found[0]
        return idx

    def mac(self, ns: str, dev: str) -> str | None:
        """The link-layer address of `dev` in `ns` ("aa:bb:..."), None for a device without
        one (TUN)."""
        (link,) = self.handle(ns).get_links(self.ifindex(ns, dev))
        addr = link.get_attr("IFLA_ADDRESS")
        return addr if addr and addr != "00:00:00:00:00:00" else None

    # ---- namespaces ---------------------------------------------------------------------

    def add_netns(self, ns: str) -> None:
        if (NETNS_RUN_DIR / ns).exists():
            raise KernelError(f"network namespace {ns} already exists")
        try:
            # pyroute2's fork-free creation: unshare(2) on this thread + bind mount.
            # It leaves this thread inside the new namespace; open its handle there, go back.
            netns._create(ns, _libc)
            self._handles[ns] = IPRoute()
        except OSError as e:
            raise KernelError(f"creating network namespace {ns}: {e.strerror or e} "
                              "(needs root: CAP_SYS_ADMIN)") from None
        finally:
            _setns(self._root)

    def remove_netns(self, ns: str) -> None:
        h = self._handles.pop(ns, None)
        if h is not None:
            h.close()
        for key in [k for k in self._ifindex if k[0] == ns]:
            del self._ifindex[key]
        try:
            netns.remove(ns, _libc)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise KernelError(f"removing network namespace {ns}: {e.strerror}") from None
        shutil.rmtree(NETNS_ETC_DIR / ns, ignore_errors=True)

    @staticmethod
    def list_netns() -> list[str]:
        try:
            return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
        except FileNotFoundError:
            return []

    # ---- steps --------------------------------------------------------------------------

    def apply(self, step: Step) -> None:
        try:
            self._apply(step)
        except NetlinkError as e:
            raise KernelError(f"{_describe(step)}: {os.strerror(e.code)}") from None
        except OSError as e:
            raise KernelError(f"{_describe(step)}: {e.strerror or e}") from None

    def _apply(self, step: Step) -> None:
        match step:
            case AddNamespace(ns):
                self.add_netns(ns)
            case SetSysctl(ns, key, value):
                with self.inside(ns):
                    # /proc/sys/net resolves against the opening thread's namespace
                    try:
                        with open(f"/proc/sys/{key}", "w") as f:
                            f.write(value)
                    except FileNotFoundError:
                        if not key.startswith("net/ipv6/"):  # a kernel without IPv6: fine
                            raise
            case AddVeth(ns_a, dev_a, ns_b, dev_b, mtu):
                peer_fd = os.open(NETNS_RUN_DIR / ns_b, os.O_RDONLY)
                try:
                    self.handle(ns_a).link("add", ifname=dev_a, kind="veth", mtu=mtu,
                                           peer={"ifname": dev_b, "net_ns_fd": peer_fd,
                                                 "mtu": mtu})
                finally:
                    os.close(peer_fd)
            case AddTun(ns, dev, mtu, txqueuelen):
                with self.inside(ns):
                    create_persistent_tun(dev)
                h = self.handle(ns)
                h.link("set", index=self.ifindex(ns, dev), mtu=mtu, txqlen=txqueuelen)
            case AddAddress(ns, dev, address, prefixlen):
                self.handle(ns).addr("add", index=self.ifindex(ns, dev), address=address,
                                     prefixlen=prefixlen)
            case SetUp(ns, dev):
                self.handle(ns).link("set", index=self.ifindex(ns, dev), state="up")
            case SetNetem(ns, dev, shape, queue_bytes, classes):
                self._set_netem(ns, dev, shape, queue_bytes, classes)
            case SetTbf(ns, dev, rate_bps, queue_bytes, mtu, classes) if classes:
                self._set_htb(ns, dev, rate_bps, queue_bytes, mtu, classes, parent=None)
            case SetTbf(ns, dev, rate_bps, queue_bytes, mtu):
                self._set_tbf(ns, dev, rate_bps, queue_bytes, mtu, parent=None)
            case AddRoute(ns, dst, nexthops, src):
                self._add_route(ns, dst, nexthops, src)
            case SetOffloadsOff(ns, dev):
                self._offloads_off(ns, dev)
            case WriteHosts(ns, entries):
                d = NETNS_ETC_DIR / ns
                d.mkdir(parents=True, exist_ok=True)
                lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
                lines += [f"{addr}\t{name}" for addr, name in entries]
                (d / "hosts").write_text("\n".join(lines) + "\n")
            case _:
                raise KernelError(f"unknown step {step!r}")

    def qdisc_stats(self, state) -> dict:  # noqa: ANN001 - a lifecycle.FabricState
        """Per link and direction, the egress qdisc counters (netem/tbf), engine-stats shaped.

        The root qdisc sees every packet a direction sends: bytes/packets out, drops (netem's
        loss and the queue's overflow together) and the backlog now. A link with no qdisc
        (unshaped) reports nothing.
        """
        links: dict[str, dict[str, dict[str, int]]] = {}
        for lid, ends in state.links.items():
            for direction, (ns, dev) in (("forward", ends["a"]), ("reverse", ends["b"])):
                try:
                    msgs = self.handle(ns).get_qdiscs(index=self.ifindex(ns, dev))
                except (KernelError, NetlinkError, OSError):
                    continue
                for m in msgs:
                    if m["parent"] != 0xFFFFFFFF:  # the root qdisc only
                        continue
                    st = m.get_attr("TCA_STATS2")
                    basic = st.get_attr("TCA_STATS_BASIC") if st else None
                    queue = st.get_attr("TCA_STATS_QUEUE") if st else None
                    if basic is None or queue is None:
                        continue
                    links.setdefault(lid, {})[direction] = {
                        "packets_out": basic["packets"], "bytes_out": basic["bytes"],
                        "drops_queue": queue["drops"], "backlog_bytes": queue["backlog"],
                        "qdisc": m.get_attr("TCA_KIND"),
                    }
        return {"links": links, "monotonic_ns": time.monotonic_ns()}

    def _offloads_off(self, ns: str, dev: str) -> None:
        from pyroute2.ethtool import Ethtool

        with self.inside(ns):
            eth = Ethtool()  # its sockets belong to the namespace it was opened in
        try:
            feats = eth.get_features(dev)
            for name in OFFLOADS_OFF:
                if name in feats.features:
                    feats.features[name].enable = False
            eth.set_features(dev, feats)
        finally:
            eth.close()

    def _add_route(self, ns: str, dst: str, nexthops: tuple[tuple[str, str], ...],
                   src: str, op: str = "add") -> None:
        h = self.handle(ns)
        kw: dict[str, object] = {"dst": "0.0.0.0/0" if dst == "default" else dst,
                                 "prefsrc": src}
        if len(nexthops) == 1:
            gw, dev = nexthops[0]
            kw.update(gateway=gw, oif=self.ifindex(ns, dev))
        else:
            kw["multipath"] = [{"gateway": gw, "oif": self.ifindex(ns, dev)}
                               for gw, dev in nexthops]
        h.route(op, **kw)

    def _set_tbf(self, ns: str, dev: str, rate_bps: int, queue_bytes: int, mtu: int,
                 parent: int | None) -> None:
        # burst: enough tokens for 1 ms at the rate (a timer tick's worth, so the kernel can
        # keep the line busy between wake-ups) but at least two full packets.
        burst = max(2 * (mtu + 14), rate_bps // 8 // 1000)
        kw: dict[str, object] = {"rate": f"{rate_bps}bit", "burst": burst,
                                 "limit": max(queue_bytes, burst), "mtu": mtu + 14}
        if parent is not None:
            kw.update(parent=parent, handle=0x00100000)
        else:
            kw["handle"] = 0x00010000
        self.handle(ns).tc("add", "tbf", self.ifindex(ns, dev), **kw)

    def _set_netem(self, ns: str, dev: str, shape: Shape, queue_bytes: int,
                   classes: tuple[TrafficClass, ...] = ()) -> None:
        # netem (root, handle 1:) delays, jitters, drops, corrupts, duplicates and reorders;
        # a tbf child (10:) then applies the rate with a byte-limited drop-tail queue (an htb
        # child, also 10:, with a queue per traffic class where the file has classes).
        idx = self.ifindex(ns, dev)
        self.handle(ns).tc("add", "netem", idx, handle=0x00010000,
                           **netem_options(shape, queue_bytes))
        if shape.rate_bps and classes:
            self._set_htb(ns, dev, shape.rate_bps, queue_bytes, shape.mtu, classes,
                          parent=0x00010001)
        elif shape.rate_bps:
            self._set_tbf(ns, dev, shape.rate_bps, queue_bytes, shape.mtu, parent=0x00010001)

    def _set_htb(self, ns: str, dev: str, rate_bps: int, queue_bytes: int, mtu: int,
                 classes: tuple[TrafficClass, ...], parent: int | None) -> None:
        """The htb tree of `htb_tree`, applied in order. A kernel without sch_red fails on the
        first class that sets `ecn`, in one line naming it (`fabric.net.doctor.
        check_class_qdiscs` says so before anything is built)."""
        _bfifo_codec()
        _red_codec()
        h = self.handle(ns)
        idx = self.ifindex(ns, dev)
        for command, kind, kw in htb_tree(rate_bps, queue_bytes, mtu, classes, parent=parent):
            try:
                h.tc(command, kind, idx, **kw)
            except NetlinkError as e:
                if kind != "red":
                    raise
                name = classes[(int(kw["handle"]) >> 16) - 0x20].name  # type: ignore[call-overload]
                why = ("this kernel has no sch_red" if e.code == errno.ENOENT
                       else os.strerror(e.code))
                raise KernelError(f"class {name} sets ecn, which the netem backend marks with "
                                  f"a red qdisc on {ns}/{dev}: {why}") from None


# ---- live changes (fabric.net.live) ----------------------------------------------------------
#
# A running fabric's links change in place: the qdiscs the plan built are changed with
# `tc change` where their kinds stay (queued packets stay queued), and replaced where a
# direction needs another kind (a delay on a link that had only tbf: its root goes, and the
# new tree is added; for that moment the direction is unshaped). A link goes down by taking
# both of its devices down; the kernel then withdraws the routes through them, so the caller
# keeps them (`routes_via`) and puts them back (`restore_route`) when the link comes up.

NETEM_HANDLE = 0x00010000
TBF_CHILD_HANDLE = 0x00100000
TBF_CHILD_PARENT = 0x00010001


class LiveKernel(Kernel):
    """The kernel adapter's live changes: read back and change a device's egress qdiscs,
    take devices down and up, keep and restore routes."""

    def __enter__(self) -> LiveKernel:
        return self

    def read_egress(self, ns: str, dev: str) -> dict:
        """What `dev`'s egress realises now, read from the kernel: whether it is up, its MTU,
        the root qdisc's kind, netem's and tbf's settings in our units (None where absent),
        and the root qdisc's counters."""
        from pyroute2.netlink.rtnl.tcmsg import common

        h = self.handle(ns)
        idx = self.ifindex(ns, dev)
        (link,) = h.get_links(idx)
        out: dict = {"up": bool(link["flags"] & 1), "mtu": link.get_attr("IFLA_MTU"),
                     "root": None, "netem": None, "tbf": None, "htb": None, "stats": {}}
        _bfifo_codec()
        u32 = 2**32 - 1
        for m in h.get_qdiscs(index=idx):
            if m["index"] != idx:
                continue
            kind = m.get_attr("TCA_KIND")
            opts = m.get_attr("TCA_OPTIONS")
            if m["parent"] == 0xFFFFFFFF:
                out["root"] = kind
                st = m.get_attr("TCA_STATS2")
                basic = st.get_attr("TCA_STATS_BASIC") if st else None
                queue = st.get_attr("TCA_STATS_QUEUE") if st else None
                if basic is not None and queue is not None:
                    out["stats"] = {"packets_out": basic["packets"], "bytes_out": basic["bytes"],
                                    "drops": queue["drops"], "backlog_bytes": queue["backlog"]}
            if kind == "netem" and opts is not None:
                tick = common.tick_in_usec or 1

                def prob(attr: str, key: str, opts=opts) -> int:  # noqa: ANN001
                    a = opts.get_attr(attr)
                    return round(a[key] * 1_000_000 / u32) if a is not None else 0

                out["netem"] = {
                    "delay_ns": round(opts["delay"] / tick * 1000),
                    "jitter_ns": round(opts["jitter"] / tick * 1000),
                    "loss_ppm": round(opts["loss"] * 1_000_000 / u32),
                    "duplicate_ppm": round(opts["duplicate"] * 1_000_000 / u32),
                    "corrupt_ppm": prob("TCA_NETEM_CORRUPT", "prob_corrupt"),
                    "reorder_ppm": prob("TCA_NETEM_REORDER", "prob_reorder"),
                    "limit_packets": opts["limit"],
                }
            elif kind == "tbf" and opts is not None:
                parms = opts.get_attr("TCA_TBF_PARMS")
                if parms is not None:
                    out["tbf"] = {"rate_bps": parms["rate"] * 8, "queue_bytes": parms["limit"]}
            elif kind == "htb":
                out["htb"] = {"handle": m["handle"]}
            elif kind == "bfifo" and opts is not None and out["htb"] is not None:
                out["htb"].setdefault("limits", []).append(opts["limit"])
        if out["htb"] is not None:
            # a queue per traffic class (`htb_tree`): its inner class holds the link's rate,
            # and the largest class queue is the link's; read as tbf's figures are
            major = out["htb"]["handle"] & 0xFFFF0000
            for c in h.get_classes(index=idx):
                copts = c.get_attr("TCA_OPTIONS")
                if c.get_attr("TCA_KIND") != "htb" or copts is None \
                        or c["handle"] != major | 1:
                    continue
                parms = copts.get_attr("TCA_HTB_PARMS")
                rate64 = copts.get_attr("TCA_HTB_RATE64")
                if parms is not None:
                    out["tbf"] = {"rate_bps": (rate64 or parms["rate"]) * 8,
                                  "queue_bytes": max(out["htb"].get("limits") or [0])}
        return out

    def set_egress(self, ns: str, dev: str, shape: Shape, queue_bytes: int, *,
                   netem: bool) -> None:
        """Make `dev`'s egress realise `shape` (host units): netem (if `netem` and the shape
        needs it) with a tbf child for the rate, tbf alone, or nothing, as the plan builds
        them; changed in place where the kinds already match."""
        from ..plan import _needs_netem

        h = self.handle(ns)
        idx = self.ifindex(ns, dev)
        cur = self.read_egress(ns, dev)
        root = cur["root"]
        want = "netem" if netem and _needs_netem(shape) else "tbf" if shape.rate_bps else None
        if cur["htb"] is not None:
            self._set_egress_htb(ns, dev, shape, queue_bytes, cur, want)
            return
        try:
            if root in ("netem", "tbf") and root != want:
                h.tc("del", root, idx, handle=NETEM_HANDLE)
                root, cur["tbf"] = None, None
            if want == "netem":
                h.tc("change" if root == "netem" else "add", "netem", idx, handle=NETEM_HANDLE,
                     **netem_options(shape, queue_bytes))
                if shape.rate_bps:
                    self._tbf(ns, dev, shape.rate_bps, queue_bytes, shape.mtu,
                              parent=TBF_CHILD_PARENT,
                              op="change" if root == "netem" and cur["tbf"] else "add")
                elif root == "netem" and cur["tbf"]:
                    h.tc("del", "tbf", idx, parent=TBF_CHILD_PARENT, handle=TBF_CHILD_HANDLE)
            elif want == "tbf":
                assert shape.rate_bps is not None
                self._tbf(ns, dev, shape.rate_bps, queue_bytes, shape.mtu, parent=None,
                          op="change" if root == "tbf" else "add")
        except NetlinkError as e:
            raise KernelError(f"changing the qdiscs on {ns}/{dev}: {os.strerror(e.code)}"
                              ) from None

    def _set_egress_htb(self, ns: str, dev: str, shape: Shape, queue_bytes: int, cur: dict,
                        want: str | None) -> None:
        """`set_egress` on a direction that queues by traffic class (`htb_tree`): netem and
        the htb classes change in place (what the class queues hold stays queued); a class
        queue that its class caps keeps its cap. A change of the tree's kind (a rate taken
        away, netem added to a link without one, or removed) is refused: the tree's classes
        live in the plan, not here."""
        h = self.handle(ns)
        idx = self.ifindex(ns, dev)
        root = cur["root"]
        have = "netem" if root == "netem" else "tbf"
        if want != have or not shape.rate_bps:
            raise KernelError(f"{ns}/{dev} queues by traffic class (htb): on the netem backend "
                              "a live change may change its rate, queue, delay, jitter and "
                              "loss, but not take its rate away or add or remove its netem "
                              "qdisc; bring the fabric up again from a changed file")
        try:
            if want == "netem":
                h.tc("change", "netem", idx, handle=NETEM_HANDLE,
                     **netem_options(shape, queue_bytes))
            major = cur["htb"]["handle"] & 0xFFFF0000
            old_queue = (cur["tbf"] or {}).get("queue_bytes", 0)
            frame = shape.mtu + 14
            burst = max(2 * frame, shape.rate_bps // 8 // 1000)
            floor = max(8_000, shape.rate_bps // 1000)
            rate = f"{shape.rate_bps}bit"
            for c in h.get_classes(index=idx):
                if c.get_attr("TCA_KIND") != "htb" or c["handle"] & 0xFFFF0000 != major:
                    continue
                parms = c.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")
                inner = c["handle"] == major | 1
                h.tc("change-class", "htb", idx, handle=c["handle"], parent=c["parent"],
                     rate=rate if inner else f"{floor}bit", ceil=rate, burst=burst,
                     cburst=burst, prio=parms["prio"], quantum=parms["quantum"], mtu=frame)
            for q in h.get_qdiscs(index=idx):
                if q.get_attr("TCA_KIND") != "bfifo":
                    continue
                limit = q.get_attr("TCA_OPTIONS")["limit"]
                new = queue_bytes if limit >= old_queue else min(limit, queue_bytes)
                h.tc("change", "bfifo", idx, handle=q["handle"], parent=q["parent"],
                     limit=max(new, 2 * frame))
        except NetlinkError as e:
            raise KernelError(f"changing the qdiscs on {ns}/{dev}: {os.strerror(e.code)}"
                              ) from None

    def _tbf(self, ns: str, dev: str, rate_bps: int, queue_bytes: int, mtu: int,
             parent: int | None, op: str) -> None:
        burst = max(2 * (mtu + 14), rate_bps // 8 // 1000)  # as `_set_tbf`
        kw: dict[str, object] = {"rate": f"{rate_bps}bit", "burst": burst,
                                 "limit": max(queue_bytes, burst), "mtu": mtu + 14}
        if parent is not None:
            kw.update(parent=parent, handle=TBF_CHILD_HANDLE)
        else:
            kw["handle"] = NETEM_HANDLE
        self.handle(ns).tc(op, "tbf", self.ifindex(ns, dev), **kw)

    def set_link_state(self, ns: str, dev: str, up: bool) -> None:
        """Set IFF_UP on `dev` in `ns`."""
        try:
            self.handle(ns).link("set", index=self.ifindex(ns, dev),
                                 state="up" if up else "down")
        except NetlinkError as e:
            raise KernelError(f"setting {ns}/{dev} {'up' if up else 'down'}: "
                              f"{os.strerror(e.code)}") from None

    def routes_via(self, ns: str, devs: set[str]) -> list[AddRoute]:
        """The gatewayed IPv4 routes of `ns`'s main table with a next hop through one of
        `devs` (what the kernel withdraws when they go down), as `AddRoute` steps."""
        import socket as _socket

        h = self.handle(ns)
        names = {self.ifindex(ns, d): d for d in self.device_names(ns)}
        out: list[AddRoute] = []
        for r in h.get_routes(family=_socket.AF_INET, table=254):
            hops: list[tuple[str, str]] = []
            gw = r.get_attr("RTA_GATEWAY")
            if gw is not None:
                hops.append((gw, names.get(r.get_attr("RTA_OIF"), "")))
            for nh in r.get_attr("RTA_MULTIPATH") or ():
                ngw = nh.get_attr("RTA_GATEWAY")
                if ngw is not None:
                    hops.append((ngw, names.get(nh["oif"], "")))
            if not hops or not any(dev in devs for _, dev in hops):
                continue
            dst = (f"{r.get_attr('RTA_DST')}/{r['dst_len']}" if r["dst_len"] else "default")
            out.append(AddRoute(ns, dst, tuple(sorted(hops)), r.get_attr("RTA_PREFSRC") or ""))
        return out

    def device_names(self, ns: str) -> list[str]:
        names = []
        for link in self.handle(ns).get_links():
            name = link.get_attr("IFLA_IFNAME")
            self._ifindex[(ns, name)] = link["index"]
            names.append(name)
        return names

    def restore_route(self, route: AddRoute) -> None:
        """Put `route` in place (a route kept by `routes_via`, or one routing computed
        again), replacing what is there now."""
        try:
            self._add_route(route.netns, route.dst, route.nexthops, route.src, op="replace")
        except NetlinkError as e:
            raise KernelError(f"restoring the route to {route.dst} in {route.netns}: "
                              f"{os.strerror(e.code)}") from None

    def withdraw_route(self, route: AddRoute) -> None:
        """Remove the route to `route.dst` from its namespace; one already gone (the kernel
        drops the routes of a device taken down) is no error."""
        dst = "0.0.0.0/0" if route.dst == "default" else route.dst
        try:
            self.handle(route.netns).route("del", dst=dst)
        except NetlinkError as e:
            if e.code != errno.ESRCH:
                raise KernelError(f"withdrawing the route to {route.dst} in {route.netns}: "
                                  f"{os.strerror(e.code)}") from None


HTB_ROOT_HANDLE = 0x00010000  # htb as the root qdisc (1:), where tbf would be
HTB_CHILD_HANDLE = 0x00100000  # htb under netem's class 1:1 (10:), where the tbf child would be
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD


def htb_tree(rate_bps: int, queue_bytes: int, mtu: int, classes: tuple[TrafficClass, ...], *,
             parent: int | None) -> list[tuple[str, str, dict[str, object]]]:
    """The pyroute2 `tc` calls (command, kind, keywords) that make one link direction's egress
    queue by traffic class in the kernel, under netem (`parent` = netem's class) or as root.

    htb (handle H) has one inner class H:1 at the link's rate (rate = ceil), and under it a
    class H:(10+i) per traffic class i, each with a byte queue of its own (the link's queue,
    capped by the class's `queue:`): drop-tail (bfifo), or RED with ECN (`red_options`) where
    the class sets `ecn`; and u32 filters on the DSCP bits of the IPv4 TOS byte and of the
    IPv6 traffic class; other packets (an unknown DSCP, ARP) go to the first class of
    priority 0, as the link engine and the RoCE switch classify. Every class is guaranteed
    only a floor (0.1% of the rate) and borrows the rest from H:1 up to the whole rate, so
    the link never carries more than its rate, and what is borrowed goes by htb's prio:
    strict classes first (prio 0.. by priority), then the weighted classes at one prio below,
    which share by deficit round robin with quantum weight x MTU, as the engine's scheduler
    does.
    """
    handle = HTB_CHILD_HANDLE if parent is not None else HTB_ROOT_HANDLE
    major = handle & 0xFFFF0000
    inner = major | 1
    default = next((i for i, c in enumerate(classes) if c.priority == 0), 0)
    frame = mtu + 14
    burst = max(2 * frame, rate_bps // 8 // 1000)  # as tbf's: 1 ms of tokens, two frames
    floor = max(8_000, rate_bps // 1000)
    strict = sorted((i for i, c in enumerate(classes) if c.strict),
                    key=lambda i: (-classes[i].priority, i))
    prio = {i: n for n, i in enumerate(strict)}
    rate = f"{rate_bps}bit"
    root: dict[str, object] = {"handle": handle, "default": 0x10 + default}
    if parent is not None:
        root["parent"] = parent
    calls: list[tuple[str, str, dict[str, object]]] = [("add", "htb", root)]
    calls.append(("add-class", "htb", {"handle": inner, "parent": major, "rate": rate,
                                       "ceil": rate, "burst": burst, "cburst": burst,
                                       "quantum": frame, "mtu": frame}))
    for i, c in enumerate(classes):
        minor = 0x10 + i
        limit = min(queue_bytes, c.queue_bytes) if c.queue_bytes else queue_bytes
        calls.append(("add-class", "htb", {
            "handle": major | minor, "parent": inner, "rate": f"{floor}bit", "ceil": rate,
            "burst": burst, "cburst": burst, "prio": min(7, prio.get(i, len(strict))),
            "quantum": max(1, c.weight) * frame, "mtu": frame}))
        limit = max(limit, 2 * frame)
        leaf: dict[str, object] = {"handle": (0x20 + i) << 16, "parent": major | minor,
                                   "limit": limit}
        if c.red is not None:
            calls.append(("add", "red", leaf | red_options(c.red, rate_bps, mtu, limit)))
        else:
            calls.append(("add", "bfifo", leaf))
    # IPv4: the TOS byte (offset 1), DSCP its top six bits. IPv6: the traffic class is the
    # header's bits 4-11, so its DSCP is the 16-bit word at offset 0 under the mask 0x0fc0.
    # Filters of one prio share a protocol: IPv4's at prio 1, IPv6's at prio 2.
    for proto, prio_, key in ((ETH_P_IP, 1, "0x{:02x}/0xfc+1"),
                              (ETH_P_IPV6, 2, "0x{:04x}/0x0fc0+0")):
        for i, c in enumerate(classes):
            if i == default:
                continue  # htb's default takes it, and every packet no filter matches
            dscp = c.dscp & 63
            calls.append(("add-filter", "u32", {
                "parent": major, "prio": prio_, "protocol": proto, "target": major | (0x10 + i),
                "keys": [key.format(dscp << 2 if proto == ETH_P_IP else dscp << 6)]}))
    return calls


def red_options(red: tuple[int, int, float], rate_bps: int, mtu: int,
                limit: int) -> dict[str, object]:
    """The keywords of a class's `red` leaf (`_red_codec`) for its `ecn` (kmin, kmax bytes,
    pmax): min=kmin, max=kmax (kept within the queue's limit and above min by a frame, as
    RED needs), probability=pmax, ECN on (ECT packets are CE-marked, others dropped), avpkt a
    full frame. burst (packets) is kmin's worth plus one, the least RED takes: the average
    then weighs each new sample by 1/4 (Wlog 2), so it follows the queue within a few
    packets, near the instantaneous queue that the link engine and DCTCP's switches mark on."""
    kmin, kmax, pmax = red
    frame = mtu + 14
    qmax = min(max(kmax, kmin + frame), limit)
    qmin = min(kmin, qmax - frame)
    return {"min": qmin, "max": qmax, "probability": pmax, "avpkt": frame,
            "burst": max(1, -(-qmin // frame)) + 1, "bandwidth": rate_bps, "ecn": True}


def _red_codec() -> None:
    """pyroute2 0.9 has no red: register one (linux/pkt_sched.h's TCA_RED_PARMS, _STAB and
    _MAX_P), its parameters worked out as `tc qdisc add ... red` does, with pyroute2's RED
    helpers (EWMA weight, probability shift, idle-damping table)."""
    import types

    from pyroute2.netlink import nla
    from pyroute2.netlink.rtnl import TC_H_ROOT, tcmsg
    from pyroute2.netlink.rtnl.tcmsg import common

    if "red" in tcmsg.plugins:
        return

    class options(nla):  # noqa: N801 - pyroute2's plugin interface names
        nla_map = (("TCA_RED_UNSPEC", "none"), ("TCA_RED_PARMS", "parms"),
                   ("TCA_RED_STAB", "cdata"), ("TCA_RED_MAX_P", "uint32"))

        class parms(nla):  # noqa: N801
            fields = (("limit", "I"), ("qth_min", "I"), ("qth_max", "I"), ("Wlog", "B"),
                      ("Plog", "B"), ("Scell_log", "B"), ("flags", "B"))

    class stats(nla):  # noqa: N801 - struct tc_red_xstats
        fields = (("early", "I"), ("pdrop", "I"), ("other", "I"), ("marked", "I"))

    class stats2(common.stats2):  # noqa: N801
        class stats_app(stats):  # noqa: N801
            pass

    def get_parameters(kw: dict) -> dict:
        avpkt, qmin, qmax = int(kw["avpkt"]), int(kw["min"]), int(kw["max"])
        p = float(kw["probability"])
        wlog = common.red_eval_ewma(qmin, int(kw["burst"]), avpkt)
        plog = common.red_eval_P(qmin, qmax, p)
        scell, stab = common.red_eval_idle_damping(wlog, avpkt, int(kw["bandwidth"]) / 8)
        if wlog < 0 or plog < 0 or scell < 0:
            raise KernelError(f"red: no parameters for min {qmin} max {qmax} burst "
                              f"{kw['burst']} avpkt {avpkt}")
        parms = {"limit": int(kw["limit"]), "qth_min": qmin, "qth_max": qmax, "Wlog": wlog,
                 "Plog": plog, "Scell_log": scell, "flags": 1 if kw.get("ecn") else 0}
        return {"attrs": [["TCA_RED_PARMS", parms],
                          ["TCA_RED_STAB", bytes(min(255, int(x)) for x in stab)],
                          ["TCA_RED_MAX_P", min(2**32 - 1, int(p * 2**32))]]}

    mod = types.ModuleType("fabric_sched_red")
    mod.__dict__.update(parent=TC_H_ROOT, options=options, stats=stats, stats2=stats2,
                        get_parameters=get_parameters)
    tcmsg.plugins["red"] = mod


def _bfifo_codec() -> None:
    """pyroute2 0.9 knows pfifo but not bfifo, whose options are the same (a u32 limit,
    here in bytes): register the one for the other."""
    from pyroute2.netlink.rtnl import tcmsg

    tcmsg.plugins.setdefault("bfifo", tcmsg.plugins["pfifo"])


def netem_options(shape: Shape, queue_bytes: int) -> dict[str, int | float]:
    """pyroute2's netem keywords for one link direction (`tc("add", "netem", ...)`): times
    in microseconds, probabilities in percent, as `tc qdisc add ... netem` takes them.

    netem's own packet limit only bounds its delay line: it must hold a bandwidth-delay
    product of packets plus the queue. A reorder sets `prob_reorder`, and pyroute2 then sets
    netem's gap to 1, as `tc ... reorder P%` does: with that probability a packet is sent at
    once, the others after the delay. A probability left at 0 is left out, so the qdisc is the
    one `tc` would build without that option.
    """
    in_flight = 0
    if shape.rate_bps:
        in_flight = shape.rate_bps * (shape.delay_ns + shape.jitter_ns) // 8 // 10**9
    opts: dict[str, int | float] = {
        "delay": shape.delay_ns // 1000, "jitter": shape.jitter_ns // 1000,
        "loss": shape.loss_ppm / 10_000,
        "limit": max(1000, (in_flight + queue_bytes) // 64 + 1),
    }
    for key, ppm in (("prob_corrupt", shape.corrupt_ppm), ("duplicate", shape.duplicate_ppm),
                     ("prob_reorder", shape.reorder_ppm)):
        if ppm:
            opts[key] = ppm / 10_000
    return opts


# what `ethtool -K DEV tx off sg off tso off gso off gro off` turns off
OFFLOADS_OFF = ("tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-scatter-gather",
                "tx-tcp-segmentation", "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation",
                "tx-generic-segmentation", "tx-udp-segmentation", "rx-gro")


def _describe(step: Step) -> str:
    match step:
        case AddNamespace(ns):
            return f"adding network namespace {ns}"
        case AddVeth(ns_a, dev_a, ns_b, dev_b, _):
            return f"adding veth {ns_a}/{dev_a} <-> {ns_b}/{dev_b}"
        case AddTun(ns, dev, _, _):
            return f"adding tun {ns}/{dev}"
        case SetNetem(ns, dev, _, _):
            return f"adding netem on {ns}/{dev}"
        case SetTbf(netns=ns, dev=dev, classes=classes):
            return f"adding {'htb' if classes else 'tbf'} on {ns}/{dev}"
        case AddRoute(ns, dst, _, _):
            return f"adding route to {dst} in {ns}"
        case SetOffloadsOff(ns, dev):
            return f"turning offloads off on {ns}/{dev}"
        case _:
            return type(step).__name__
