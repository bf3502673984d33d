"""The netem test harness: real netem measurements, the plugin's pure logic, one guest boot.

The netem tests run natively where the host kernel has sch_netem, else all of them in one
user-mode Linux guest (fabric.testing.pytest_netem). Addresses are from 198.18.0.0/15
(benchmarking range), names carry the pid so parallel runs do not collide.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric.testing import pytest_netem as plugin
from fabric.testing import uml

ADDR_A, ADDR_B = "198.18.0.1", "198.18.0.2"


@pytest.fixture
def veth_pair() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces joined by a veth pair; yields (ns_a, ns_b), removes both after.

    Device names: `va` in ns_a (ADDR_A) and `vb` in ns_b (ADDR_B).
    """
    from pyroute2 import NetNS, netns  # only tests that need the kernel pay for the import

    tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ns_a, ns_b = f"fabt-a-{tag}", f"fabt-b-{tag}"
    try:
        netns.create(ns_b)
        with NetNS(ns_a) as ns:
            ns.link("add", ifname="va", kind="veth", peer={"ifname": "vb", "net_ns_fd": ns_b})
            idx = ns.link_lookup(ifname="va")[0]
            ns.addr("add", index=idx, address=ADDR_A, prefixlen=30)
            ns.link("set", index=idx, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        with NetNS(ns_b) as ns:
            idx = ns.link_lookup(ifname="vb")[0]
            ns.addr("add", index=idx, address=ADDR_B, prefixlen=30)
            ns.link("set", index=idx, state="up")
        # Warm ARP before any delay is added, so no measured packet waits for resolution.
        _ping(ns_a, ADDR_B, "-c", "1", "-W", "2")
        yield ns_a, ns_b
    finally:
        for name in (ns_a, ns_b):
            if name in netns.listnetns():
                netns.remove(name)  # removing a namespace also deletes its veth end


def _add_netem(ns_name: str, dev: str, **netem: int) -> None:
    """netem on `dev`'s root. pyroute2 units: delay in microseconds, loss in percent."""
    from pyroute2 import NetNS

    with NetNS(ns_name) as ns:
        ns.tc("add", "netem", index=ns.link_lookup(ifname=dev)[0], handle="1:", **netem)


def _ping(ns_name: str, addr: str, *args: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns_name, "ping", "-n", *args, addr],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.stdout


@pytest.mark.netns
@pytest.mark.netem
def test_netem_delay_sets_ping_rtt(veth_pair: tuple[str, str]) -> None:
    ns_a, _ = veth_pair
    _add_netem(ns_a, "va", delay=20_000)
    out = _ping(ns_a, ADDR_B, "-c", "5", "-i", "0.2")
    m = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/", out)
    assert m, out
    # The delay is on one direction only, so the RTT is the delay plus a little.
    assert 19.0 <= float(m.group(1)) <= 23.0, out


@pytest.mark.netns
@pytest.mark.netem
def test_netem_loss_drops_about_that_share(veth_pair: tuple[str, str]) -> None:
    ns_a, _ = veth_pair
    _add_netem(ns_a, "va", loss=30)
    out = _ping(ns_a, ADDR_B, "-q", "-c", "200", "-i", "0.01", "-W", "1")
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, got = int(m.group(1)), int(m.group(2))
    # 200 draws at p=0.3: one standard deviation is 3.2 points, so 20-40 % is +-3 sigma.
    assert 0.20 <= 1 - got / sent <= 0.40, out


# --- the plugin's pure logic (no kernel, no boot) ---

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
<testcase classname="tests.test_x" name="test_ok" time="0.5"/>
<testcase classname="tests.test_x" name="test_bad[20ms]" time="1.25">
  <failure message="assert 30.1 &lt;= 23">tests/test_x.py:9: AssertionError</failure>
  <system-out>rtt 30.1</system-out>
</testcase>
<testcase classname="tests.test_x.TestY" name="test_err" time="0">
  <error message="failed on setup">fixture 'nope' not found</error>
</testcase>
<testcase classname="tests.test_x" name="test_skip" time="0">
  <skipped type="pytest.skip" message="needs ifb">tests/test_x.py:3: needs ifb</skipped>
</testcase>
</testsuite></testsuites>"""


def test_junit_key_matches_pytest_mangling() -> None:
    assert plugin.junit_key("tests/test_x.py::test_ok") == ("tests.test_x", "test_ok")
    assert plugin.junit_key("tests/test_x.py::TestY::test_err") == (
        "tests.test_x.TestY",
        "test_err",
    )
    # Parameters may contain dots, slashes and '::'; they stay on the name untouched.
    assert plugin.junit_key("tests/test_x.py::test_bad[a/b.py::c]") == (
        "tests.test_x",
        "test_bad[a/b.py::c]",
    )


def test_parse_junit_outcomes() -> None:
    got = plugin.parse_junit(JUNIT)
    assert got[("tests.test_x", "test_ok")] == plugin.Outcome("passed", "", 0.5)
    bad = got[("tests.test_x", "test_bad[20ms]")]
    assert (bad.outcome, bad.duration) == ("failed", 1.25)
    assert bad.message.startswith("assert 30.1 <= 23\n")
    assert "AssertionError" in bad.message
    assert "rtt 30.1" in bad.message
    assert got[("tests.test_x.TestY", "test_err")].outcome == "failed"
    assert got[("tests.test_x", "test_skip")] == plugin.Outcome("skipped", "needs ifb", 0.0)


@pytest.mark.parametrize(
    ("native", "in_guest", "uml_path", "require", "mode"),
    [
        (True, False, None, True, "native"),
        (False, True, "/usr/bin/linux.uml", False, "guest"),
        (False, False, "/usr/bin/linux.uml", True, "uml"),
        (False, False, None, False, "skip"),
        (False, False, None, True, "fail"),
    ],
)
def test_choose_mode(
    native: bool, in_guest: bool, uml_path: str | None, require: bool, mode: str
) -> None:
    got = plugin.choose_mode(native=native, in_guest=in_guest, uml_path=uml_path, require=require)
    assert got == mode


def test_reason_strings_say_how_to_fix() -> None:
    assert plugin.SKIP_REASON == (
        "no sch_netem on this kernel and user-mode-linux not installed "
        "(apt-get install user-mode-linux kmod)"
    )
    assert plugin.REQUIRE_REASON.startswith("FABRIC_REQUIRE_NETEM=1 but no sch_netem")
    longrepr = plugin.guest_longrepr("t::x", "AssertionError: boom\ntraceback")
    assert longrepr.startswith("AssertionError: boom [in the UML guest]\n")
    assert longrepr.endswith("traceback")
    crashed = plugin.crashed_longrepr("t::x", "\n".join(f"l{i}" for i in range(100)), 255)
    assert "exit 255" in crashed
    assert crashed.endswith("l99")
    assert "l59" not in crashed


def test_init_script_quotes_argv_env_and_cwd() -> None:
    script = uml.make_init_script(
        Path("/tmp/job x"), ["sh", "-c", "echo 'hi'; exit 3"], {"A": "b c$"}, "/w d"
    )
    assert "exec sh -c 'echo '\"'\"'hi'\"'\"'; exit 3'" in script
    assert "export A='b c$'" in script
    assert "cd '/w d' || exit 126" in script
    assert "> '/tmp/job x/status'" in script
    assert "modprobe" in script
    assert "/proc/sysrq-trigger" in script


# --- one real boot, outside the batched netem run ---


def test_run_in_guest_boots_a_netem_kernel() -> None:
    if os.environ.get(plugin.IN_GUEST_ENV) == "1":
        pytest.skip("already inside a UML guest")
    if uml.uml_available() is None:
        reason = f"user-mode Linux not installed ({uml.INSTALL_HINT})"
        if os.environ.get(plugin.REQUIRE_ENV) == "1":
            pytest.fail(f"{plugin.REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    result = uml.run_in_guest(
        ["sh", "-c", "tc qdisc add dev lo root netem delay 1ms && echo ok"], timeout=120
    )
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    assert 0 < result.boot_seconds < 60
