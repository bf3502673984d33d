"""The netem test harness: real netem measurements, the plugin's logic, the guest backends.

The netem tests run natively where the host kernel has sch_netem, else all of them in one
guest boot (fabric.testing.pytest_netem): user-mode Linux, QEMU with KVM or QEMU under
emulation, whichever comes up first (fabric.testing.guest). Addresses are from
198.18.0.0/15 (benchmarking range), names carry the pid so parallel runs do not collide.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from fabric.testing import guest
from fabric.testing import pytest_netem as plugin

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


def _min_rtt_ms(out: str) -> float:
    m = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/", out)
    assert m, out
    return float(m.group(1))


@pytest.mark.netns
@pytest.mark.netem
def test_netem_delay_sets_ping_rtt(veth_pair: tuple[str, str]) -> None:
    ns_a, _ = veth_pair
    # The bound comes from this host (or guest): an emulated CPU adds its own round trip,
    # so measure the same path without netem first.
    base = _min_rtt_ms(_ping(ns_a, ADDR_B, "-c", "5", "-i", "0.2"))
    _add_netem(ns_a, "va", delay=20_000)
    out = _ping(ns_a, ADDR_B, "-c", "5", "-i", "0.2")
    # The delay is on one direction only, so the RTT is the delay plus the path's own.
    assert 20.0 <= _min_rtt_ms(out) <= 20.0 + base + max(1.0, 2 * base), (base, out)


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
    ("native", "in_guest", "backends", "require", "mode"),
    [
        (True, False, [], True, "native"),
        (False, True, ["uml"], False, "guest"),
        (False, False, ["qemu-tcg"], True, "batch"),
        (False, False, [], False, "skip"),
        (False, False, [], True, "fail"),
    ],
)
def test_choose_mode(
    native: bool, in_guest: bool, backends: list[str], require: bool, mode: str
) -> None:
    got = plugin.choose_mode(native=native, in_guest=in_guest, backends=backends, require=require)
    assert got == mode


def test_reason_strings_say_how_to_fix() -> None:
    assert plugin.SKIP_REASON == (
        "no sch_netem on this kernel and no guest kernel to run netem in "
        "(user-mode Linux or QEMU; install them with bash scripts/install.sh)"
    )
    assert plugin.REQUIRE_REASON.startswith("FABRIC_REQUIRE_NETEM=1 but no sch_netem")
    longrepr = plugin.guest_longrepr("t::x", "AssertionError: boom\ntraceback", "QEMU guest")
    assert longrepr.startswith("AssertionError: boom [in the QEMU guest]\n")
    assert longrepr.endswith("traceback")
    ran = guest.GuestResult(1, "\n".join(f"l{i}" for i in range(100)), 1.0, backend="qemu-tcg")
    crashed = plugin.crashed_longrepr("t::x", ran)
    assert "no result from the QEMU (TCG, emulated) guest (guest pytest exit 1)" in crashed
    assert crashed.endswith("l99")
    assert "l59" not in crashed


def test_no_guest_booted_fails_with_one_line_naming_what_was_tried() -> None:
    none = guest.GuestResult(
        guest.NO_STATUS, "no guest kernel with netem could boot here: uml: UML cannot boot", 0.0
    )
    crashed = plugin.crashed_longrepr("t::x", none)
    first = crashed.splitlines()[0]
    assert first == "no guest kernel with netem could boot here: uml: UML cannot boot"
    assert "bash scripts/install.sh" in crashed


def test_summary_line_names_the_guest_and_what_was_passed_over() -> None:
    ran = guest.GuestResult(
        0, "", 7.84, 101.26, backend="qemu-tcg",
        passed_over=(guest.Verdict("uml", False, "UML cannot boot on this CPU (AMX XSAVE)"),),
    )  # fmt: skip
    assert plugin.summary_line({"batch": 9}, ran) == (
        "9 in one QEMU (TCG, emulated) guest (boot 7.8 s + run 101.3 s); "
        "passed over: uml: UML cannot boot on this CPU (AMX XSAVE)"
    )
    assert plugin.summary_line({"native": 3}, None) == "3 natively (host kernel has sch_netem)"
    failed = guest.GuestResult(guest.NO_STATUS, "", 0.0)
    assert plugin.summary_line({"batch": 2}, failed) == "2 failed: no guest booted"


def test_payload_quotes_argv_env_and_cwd_and_checks_netem() -> None:
    script = guest.make_payload(
        Path("/tmp/job x"), ["sh", "-c", "echo 'hi'; exit 3"], {"A": "b c$"}, "/w d"
    )
    assert "exec sh -c 'echo '\"'\"'hi'\"'\"'; exit 3'" in script
    assert "export A='b c$'" in script
    assert "cd '/w d' || exit 126" in script
    assert "> '/tmp/job x/status'" in script
    assert "modprobe" in script
    assert "tc qdisc add dev lo root netem delay 1ms > '/tmp/job x/netem'" in script
    assert f"echo {guest.NO_NETEM} > '/tmp/job x/status'" in script
    init = guest.make_uml_init(Path("/j"), ["true"], {}, "/")
    assert init.startswith(f"#!/bin/sh\n# Generated by fabric.testing.guest; runs as PID 1 "
                           f"inside the UML guest.\nexport PATH={guest.GUEST_PATH}\n")
    for text in (script, init):  # both parse as shell scripts
        parsed = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True)
        assert parsed.returncode == 0, parsed.stderr
    assert "mount -t tmpfs tmpfs /run" in init
    assert init.index("exec true") < init.index("/proc/sysrq-trigger")


def test_uml_panic_on_an_amx_cpu_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    console = (
        "userspace - ptrace set fp regs failed, errno = 14\n"
        "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n"
    )
    uml = next(b for b in guest.BACKENDS if b.name == "uml")
    monkeypatch.setattr(guest, "cpu_has_amx", lambda: True)
    assert uml.diagnose(console, "") == (
        "UML cannot boot on this CPU (AMX XSAVE): kernel panic before init"
    )
    other = "Kernel panic - not syncing: VFS: Unable to mount root fs\n"
    assert uml.diagnose(other, "") == (
        "UML kernel panicked before init: Kernel panic - not syncing: VFS: Unable to mount root fs"
    )
    kvm = next(b for b in guest.BACKENDS if b.name == "qemu-kvm")
    assert kvm.diagnose("Probing EDD (edd=off to disable)... ok", "no kernel output within 15 s") \
        == "no kernel output within 15 s under KVM (nested virtualisation hangs?)"


# --- backend selection, with stand-in guests (real processes, no kernel) ---


def _fake(
    name: str, behaviour: str, *, banner_seconds: float = 0.5, boot_seconds: float = 5
) -> guest.Backend:
    """A backend whose 'guest' is a shell on the host that behaves like a guest would.

    panic: prints a UML-style panic and exits; silent: prints nothing and hangs; no-netem:
    boots but cannot add netem; boots: runs the command (no netem check: the host has none).
    """

    def launch(
        job: Path, argv: Sequence[str], env: Mapping[str, str], cwd: str, rw: Sequence[str]
    ) -> guest.Launch:
        j = shlex.quote(str(job))
        cmd = shlex.join(argv)
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        script = {
            "panic": "echo 'Kernel panic - not syncing: Attempted to kill init!'; exit 134",
            "silent": "sleep 30",
            "no-netem": f"echo 'Linux version x'; date +%s.%N > {j}/started; "
            f"echo 'RTNETLINK answers: No such file or directory' > {j}/netem; "
            f"echo {guest.NO_NETEM} > {j}/status",
            "boots": f"echo 'Linux version x'; date +%s.%N > {j}/started; echo ok > {j}/netem; "
            f"(cd {shlex.quote(cwd)} && env {exports} {cmd}) > {j}/output 2>&1; "
            f"echo $? > {j}/status",
        }[behaviour]
        return guest.Launch(
            ["sh", "-c", script], dict(os.environ), banner="Linux version",
            banner_seconds=banner_seconds, boot_seconds=boot_seconds,
        )  # fmt: skip

    return guest.Backend(name, lambda: None, launch)


@pytest.fixture
def fake_backends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean verdict cache and a record file of the test's own; returns the record path."""
    monkeypatch.setattr(guest, "_DEAD", {})
    record = tmp_path / "verdicts.json"
    monkeypatch.setenv(guest.RECORD_ENV, str(record))
    return record


def test_first_backend_that_boots_runs_the_command_and_the_rest_are_named(
    fake_backends: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guest, "BACKENDS", (
        _fake("uml", "panic"), _fake("qemu-kvm", "silent"), _fake("qemu-tcg", "no-netem"),
        _fake("spare", "boots"), _fake("never", "boots"),
    ))  # fmt: skip
    tried: list[str] = []
    t0 = time.monotonic()
    res = guest.run_in_guest(
        ["sh", "-c", 'echo "in $FABRIC_GUEST_BACKEND: $X"; exit 3'], env={"X": "y z"},
        on_try=tried.append,
    )  # fmt: skip
    assert time.monotonic() - t0 < 10  # a panic and a silent guest cost seconds, not minutes
    assert tried == ["uml", "qemu-kvm", "qemu-tcg", "spare"]
    assert (res.backend, res.exit_code) == ("spare", 3)
    assert res.output.strip() == "in spare: y z"
    reasons = {v.backend: v.reason for v in res.passed_over}
    assert reasons["uml"] == "did not boot (last console line: 'Kernel panic - not syncing: " \
        "Attempted to kill init!')"
    assert reasons["qemu-kvm"] == "no kernel output within 0.5 s"
    assert reasons["qemu-tcg"] == (
        "booted, but netem failed: RTNETLINK answers: No such file or directory"
    )
    # Failed backends are remembered for the rest of the process: no second boot.
    tried.clear()
    again = guest.run_in_guest(["true"], on_try=tried.append)
    assert tried == ["spare"]
    assert again.ok
    assert again.passed_over[0] == guest.Verdict("uml", False, reasons["uml"], 0.0)
    # The record `fabric doctor` reads keeps each backend's last real verdict.
    saved = json.loads(fake_backends.read_text())
    assert saved["host"] == guest.host_fingerprint()
    assert [(v["backend"], v["ok"]) for v in saved["verdicts"]] == [
        ("uml", False), ("qemu-kvm", False), ("qemu-tcg", False), ("spare", True)
    ]
    assert guest.last_record() == saved


def test_a_record_from_another_host_is_not_shown(fake_backends: Path) -> None:
    fake_backends.write_text(json.dumps({"host": "another kernel | cpu", "verdicts": []}))
    assert guest.last_record() is None
    fake_backends.write_text("{not json")
    assert guest.last_record() is None


def test_no_backend_boots(fake_backends: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest, "BACKENDS", (_fake("uml", "panic"), _fake("qemu-tcg", "silent")))
    res = guest.run_in_guest(["true"])
    assert res.exit_code == guest.NO_STATUS
    assert res.backend == ""
    assert res.output.startswith("no guest kernel with netem could boot here: uml: did not boot")
    assert "qemu-tcg: no kernel output within 0.5 s" in res.output


def test_nothing_installed_says_what_to_install(
    fake_backends: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = guest.Backend("uml", lambda: "not installed (apt-get install user-mode-linux kmod)",
                         _fake("x", "boots").launch)
    monkeypatch.setattr(guest, "BACKENDS", (gone,))
    with pytest.raises(guest.GuestUnavailable, match=r"^no guest backend is installed \(uml: "
                       r"not installed \(apt-get install user-mode-linux kmod\)\); run bash "
                       r"scripts/install.sh$"):
        guest.run_in_guest(["true"])


def test_a_command_past_its_timeout_is_killed(
    fake_backends: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guest, "BACKENDS", (_fake("uml", "boots"),))
    t0 = time.monotonic()
    res = guest.run_in_guest([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert time.monotonic() - t0 < 10
    assert res.exit_code == guest.TIMED_OUT
    assert "fabric.testing.guest: timed out after 1 s and was killed" in res.output


def _stand_in_guest(monkeypatch: pytest.MonkeyPatch, pids: Path) -> None:
    """The only backend: a 'guest' with a child of its own (as virtme-run has QEMU) that
    writes `shell-pid child-pid job-dir` to `pids` and waits."""

    def launch(job: Path, *_: object) -> guest.Launch:
        script = (f"sleep 60 & echo $$ $! {shlex.quote(str(job))} > {shlex.quote(str(pids))}; "
                  "wait")
        return guest.Launch(["sh", "-c", script], dict(os.environ), None, 0, 60)

    monkeypatch.setattr(guest, "BACKENDS", (guest.Backend("uml", lambda: None, launch),))


def _when_started(monkeypatch: pytest.MonkeyPatch, pids: Path, act: Callable[[], None]) -> None:
    """Call `act` from the watcher's sleep once the stand-in guest has started."""
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if pids.exists() and len(pids.read_text().split()) == 3:
            act()

    monkeypatch.setattr(guest.time, "sleep", sleep)


def _assert_gone(pids: Path) -> None:
    """The stand-in guest's processes have ended and its job dir is removed."""
    shell, child, job = pids.read_text().split()
    for pid in (int(shell), int(child)):
        for _ in range(100):  # a killed orphan is reaped by init, not by us
            if not _running(pid):
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"process {pid} of the stopped guest is still running")
    assert not Path(job).exists()


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_ctrl_c_while_a_guest_boots_kills_it(
    fake_backends: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    _stand_in_guest(monkeypatch, pids)

    def interrupt() -> None:
        raise KeyboardInterrupt

    _when_started(monkeypatch, pids, interrupt)
    with pytest.raises(KeyboardInterrupt):
        guest.run_in_guest(["true"])
    monkeypatch.undo()
    _assert_gone(pids)


def test_sigterm_while_a_guest_runs_kills_it_and_removes_its_job_dir(
    fake_backends: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A killed test run (CI's timeout, `kill`) must not leave a guest or its files behind."""
    pids = tmp_path / "pids"
    _stand_in_guest(monkeypatch, pids)
    _when_started(monkeypatch, pids, lambda: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exited:
        guest.run_in_guest(["true"])
    monkeypatch.undo()
    assert exited.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # restored
    _assert_gone(pids)


# --- real boots, outside the batched netem run ---


def test_a_guest_with_netem_boots_and_slow_backends_are_given_up_early(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Boot the first guest backend that works here, from a clean verdict cache.

    Every backend passed over must have cost seconds, not a long timeout: a UML panic or
    a silent QEMU is recognised early.
    """
    if os.environ.get(plugin.IN_GUEST_ENV) == "1":
        pytest.skip("already inside a guest")
    if guest.host_has_netem():
        pytest.skip("the host kernel has sch_netem: netem tests run natively, no guest needed")
    installed = guest.available_backends()
    if not installed:
        if os.environ.get(plugin.REQUIRE_ENV) == "1":
            pytest.fail(f"{plugin.REQUIRE_ENV}=1 but {plugin.SKIP_REASON}")
        pytest.skip(plugin.SKIP_REASON)
    monkeypatch.setattr(guest, "_DEAD", {})
    monkeypatch.setenv(guest.RECORD_ENV, str(tmp_path / "verdicts.json"))
    result = guest.run_in_guest(
        ["sh", "-c", "tc qdisc add dev lo root netem delay 1ms && echo ok"], timeout=120
    )
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    assert result.backend in installed
    assert 0 < result.boot_seconds < 60
    for v in result.passed_over:
        assert v.reason
        assert v.seconds < 20, v


# --- fabric doctor: where netem tests run ---


def _doctor(monkeypatch: pytest.MonkeyPatch, *, native: bool = False, probe: bool = False):
    from fabric.net import doctor

    monkeypatch.setattr(guest, "host_has_netem", lambda: native)
    monkeypatch.setattr(doctor, "probe_qdiscs", lambda: {"netem": None if native else "no"})
    return doctor.guest_checks(probe=probe)


def test_doctor_shows_the_recorded_verdicts_and_the_guest_that_runs(
    fake_backends: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guest, "BACKENDS", (
        _fake("uml", "panic"), _fake("qemu-kvm", "silent"), _fake("qemu-tcg", "boots"),
    ))  # fmt: skip
    checks, verdict = _doctor(monkeypatch)
    assert [(c.name, c.ok) for c in checks] == [
        ("guest uml", True), ("guest qemu-kvm", True), ("guest qemu-tcg", True)
    ]
    assert checks[0].detail == "installed; not probed on this host yet (fabric doctor --guest)"
    assert verdict.startswith("netem tests: in a guest, not probed on this host yet")
    # --guest boots them in order, as a test run would, and records what it saw
    checks, verdict = _doctor(monkeypatch, probe=True)
    assert [(c.name, c.ok) for c in checks] == [
        ("guest uml", False), ("guest qemu-kvm", False), ("guest qemu-tcg", True)
    ]
    assert checks[1].detail.startswith("no kernel output within 0.5 s (probed 20")
    assert re.fullmatch(r"boots with netem in \d+\.\d s \(probed [\d-]+T[\d:]+\)", checks[2].detail)
    assert verdict == (
        "netem tests: in a QEMU (TCG, emulated) guest; passed over: uml: did not boot (last "
        "console line: 'Kernel panic - not syncing: Attempted to kill init!'); qemu-kvm: no "
        "kernel output within 0.5 s"
    )
    # a later doctor without --guest shows the same from the record
    assert _doctor(monkeypatch)[1] == verdict


def test_doctor_when_netem_is_native_or_nothing_can_run(
    fake_backends: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _doctor(monkeypatch, native=True)[1] == (
        "netem tests: natively (host kernel has sch_netem)"
    )
    gone = guest.Backend("uml", lambda: "not installed (apt-get install user-mode-linux kmod)",
                         _fake("x", "boots").launch)
    monkeypatch.setattr(guest, "BACKENDS", (gone,))
    checks, verdict = _doctor(monkeypatch, probe=True)
    assert (checks[0].ok, checks[0].detail) == (
        False, "not installed (apt-get install user-mode-linux kmod)"
    )
    assert verdict == (
        "netem tests: none can run here (uml: not installed (apt-get install user-mode-linux "
        "kmod)); run bash scripts/install.sh"
    )
    monkeypatch.setattr(guest, "BACKENDS", (_fake("uml", "panic"),))
    assert _doctor(monkeypatch, probe=True)[1].startswith(
        "netem tests: none can run here (no guest kernel with netem could boot here: uml: did "
        "not boot"
    )


def test_doctor_command_prints_where_netem_tests_run() -> None:
    from click.testing import CliRunner

    from fabric.cli import cli

    res = CliRunner().invoke(cli, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "guest qemu-tcg" in res.output
    assert re.search(r"^netem tests: (natively|in a |none can run here)", res.output, re.M)
    assert "--guest" in CliRunner().invoke(cli, ["doctor", "--help"]).output


def test_in_emulated_guest_reads_the_backend_that_booted_the_guest(monkeypatch) -> None:
    monkeypatch.delenv(guest.BACKEND_ENV, raising=False)
    assert not guest.in_emulated_guest()  # the host
    for name, emulated in (("uml", False), ("qemu-kvm", False), ("qemu-tcg", True)):
        monkeypatch.setenv(guest.BACKEND_ENV, name)
        assert guest.in_emulated_guest() is emulated
