"""pytest plugin: run `@pytest.mark.netem` tests where a kernel with `sch_netem` is.

Register it from the top-level conftest::

    pytest_plugins = ["fabric.testing.pytest_netem"]

or ad hoc with `pytest -p fabric.testing.pytest_netem`.

For each netem test, in order of preference:

1. the host kernel has netem -> the test runs normally;
2. we are the pytest inside a guest (FABRIC_IN_GUEST=1) -> it runs normally;
3. a guest backend is installed (fabric.testing.guest: user-mode Linux, QEMU with KVM,
   QEMU under emulation) -> the first netem test to run triggers ONE guest boot, on the
   first backend that really comes up with netem, that runs every selected netem test;
   each host-side test then reports the guest's outcome under its own id (a boot costs
   seconds, so batching matters);
4. otherwise the test is skipped, or fails if FABRIC_REQUIRE_NETEM=1 (CI), so netem
   tests can never be skipped silently there. If backends are installed but none boots,
   every netem test fails with one line naming what was tried.

Replayed tests never set up fixtures on the host: `pytest_runtest_protocol` reports
the three phases itself, which also keeps pytest-trio, -x and -k working unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Literal

import pytest

from fabric.testing import guest

IN_GUEST_ENV = "FABRIC_IN_GUEST"
REQUIRE_ENV = "FABRIC_REQUIRE_NETEM"
SKIP_REASON = (
    "no sch_netem on this kernel and no guest kernel to run netem in "
    f"(user-mode Linux or QEMU; install them with {guest.INSTALL_HINT})"
)
REQUIRE_REASON = f"{REQUIRE_ENV}=1 but {SKIP_REASON}"
CONSOLE_TAIL_LINES = 40

Mode = Literal["native", "guest", "batch", "skip", "fail"]


@dataclass(frozen=True)
class Outcome:
    """One test's result as the guest's JUnit XML reported it."""

    outcome: Literal["passed", "failed", "skipped"]
    message: str = ""
    duration: float = 0.0


def choose_mode(*, native: bool, in_guest: bool, backends: list[str], require: bool) -> Mode:
    """Where netem tests run: natively, as the guest's own pytest, batched in a guest, or not.

    `backends` are the guest backends installed here (not yet proven to boot).
    """
    if native:
        return "native"
    if in_guest:
        return "guest"
    if backends:
        return "batch"
    return "fail" if require else "skip"


def junit_key(nodeid: str) -> tuple[str, str]:
    """(classname, name) that pytest's junitxml writes for `nodeid`.

    Mirrors `_pytest.junitxml.mangle_test_address`: the path becomes dotted, `.py`
    is dropped, parameters stay on the last part.
    """
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = names[0].replace("/", ".").removesuffix(".py")
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def parse_junit(xml_text: str) -> dict[tuple[str, str], Outcome]:
    """Map each <testcase> of a pytest JUnit XML report to its outcome.

    A failure's message starts with the crash line (e.g. `AssertionError: ...`), then the
    traceback, then any captured output.
    """
    results: dict[tuple[str, str], Outcome] = {}
    for case in ET.fromstring(xml_text).iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        duration = float(case.get("time") or 0)
        problems = [c for c in case if c.tag in ("failure", "error")]
        skipped = case.find("skipped")
        if problems:
            parts = [p.get("message", p.tag) for p in problems[:1]]
            parts += [(p.text or "").strip() for p in problems]
            parts += [_drop_empty_sections(case.findtext(t) or "") for t in _CAPTURED]
            results[key] = Outcome("failed", "\n\n".join(p for p in parts if p), duration)
        elif skipped is not None:
            results[key] = Outcome("skipped", skipped.get("message") or "skipped", duration)
        else:
            results[key] = Outcome("passed", "", duration)
    return results


_CAPTURED = ("system-out", "system-err")
# junitxml writes a "---- Captured Log ----" style header even when the section is empty.
_EMPTY_SECTION = re.compile(r"^-+ Captured \w+ -+\n\s*(?=^-+ Captured |\Z)", re.M)


def _drop_empty_sections(text: str) -> str:
    return _EMPTY_SECTION.sub("", text).strip()


def guest_longrepr(nodeid: str, message: str, label: str) -> str:
    """Failure text shown on the host for a test that failed inside the guest.

    The first line is what the short summary shows, so it carries the crash message.
    """
    headline = message.splitlines()[0] if message else "failed"
    return (
        f"{headline} [in the {label}]\n\n"
        f"{nodeid} ran in a {label} (sch_netem); the guest's report:\n\n{message}"
    )


def crashed_longrepr(nodeid: str, result: guest.GuestResult) -> str:
    """Failure text for a test the guest never reported (no boot, crash, timeout, ...).

    When no guest booted, the first line says what was tried and why each failed.
    """
    if not result.backend:
        return f"{result.output.strip()}\n(needed by {nodeid}; install with {guest.INSTALL_HINT})"
    tail = "\n".join(result.output.splitlines()[-CONSOLE_TAIL_LINES:])
    return (
        f"{nodeid}: no result from the {result.label} (guest pytest exit "
        f"{result.exit_code}); last {CONSOLE_TAIL_LINES} lines of its output:\n\n{tail}"
    )


def _is_netem(item: pytest.Item) -> bool:
    return item.get_closest_marker("netem") is not None


@dataclass
class _State:
    """Per-session bookkeeping, kept in config.stash."""

    mode: Mode | None = None
    results: dict[tuple[str, str], Outcome] | None = None
    run: guest.GuestResult | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def resolve_mode(self) -> Mode:
        if self.mode is None:  # probe lazily: sessions without netem tests pay nothing
            self.mode = choose_mode(
                native=guest.host_has_netem(),
                in_guest=os.environ.get(IN_GUEST_ENV) == "1",
                backends=guest.available_backends(),
                require=os.environ.get(REQUIRE_ENV) == "1",
            )
        return self.mode


_STATE = pytest.StashKey[_State]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netem: needs a kernel with sch_netem (native, or batched into one guest boot)"
    )
    config.stash[_STATE] = _State()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if not _is_netem(item):
        return None
    state = item.config.stash[_STATE]
    mode = state.resolve_mode()
    state.counts[mode] = state.counts.get(mode, 0) + 1
    if mode in ("native", "guest"):
        return None  # run normally
    if mode == "skip":
        outcome = Outcome("skipped", SKIP_REASON)
    elif mode == "fail":
        outcome = Outcome("failed", REQUIRE_REASON)
    else:
        outcome = _guest_outcome(item, state)
    _replay(item, nextitem, outcome)
    return True


def _guest_outcome(item: pytest.Item, state: _State) -> Outcome:
    """This item's result from the (single, lazily started) guest run."""
    if state.results is None:
        _run_batch(item.session, state)
    assert state.results is not None
    assert state.run is not None
    found = state.results.get(junit_key(item.nodeid))
    if found is None:
        return Outcome("failed", crashed_longrepr(item.nodeid, state.run))
    if found.outcome == "failed":
        message = guest_longrepr(item.nodeid, found.message, state.run.label)
        return Outcome("failed", message, found.duration)
    return found


def _run_batch(session: pytest.Session, state: _State) -> None:
    """Boot one guest that runs every selected netem test, and parse its JUnit XML."""
    ids = [i.nodeid for i in session.items if _is_netem(i)]
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    def on_try(backend: str) -> None:
        say(f"fabric: booting a {guest.LABELS[backend]} for {len(ids)} netem test(s)")

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_CURRENT")}
    env[IN_GUEST_ENV] = "1"
    # The guest sees the host's files, so its report and pytest's tmp dirs go to a host
    # directory we own and share writable with it (not pytest's shared /tmp/pytest-of-*,
    # which a host run may prune).
    with tempfile.TemporaryDirectory(prefix="fabric-netem-", dir=guest.job_parent()) as tmp:
        xml_path = os.path.join(tmp, "r.xml")
        argv = [
            # sys.executable is the real interpreter (a pyenv shim would be a script
            # that costs seconds in the guest); keep it unresolved so venvs still work.
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-p", "fabric.testing.pytest_netem", f"--rootdir={config.rootpath}",
            f"--basetemp={os.path.join(tmp, 'basetemp')}", f"--junitxml={xml_path}",
            "-o", "junit_logging=all", *ids,
        ]  # fmt: skip
        try:
            state.run = guest.run_in_guest(
                argv, env=env, cwd=str(config.rootpath), rw_dirs=[tmp], on_try=on_try
            )
        except guest.GuestUnavailable as e:
            state.run = guest.GuestResult(guest.NO_STATUS, f"cannot boot a guest: {e}", 0.0)
        if state.run.passed_over:
            say(f"fabric: passed over: {state.run.passed_over_text()}")
        try:
            with open(xml_path, encoding="utf-8") as f:
                state.results = parse_junit(f.read())
        except (OSError, ET.ParseError):
            state.results = {}


def _replay(item: pytest.Item, nextitem: pytest.Item | None, outcome: Outcome) -> None:
    """Report `outcome` for `item` through the normal hooks, without running it here."""
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    now = time.time()

    def report(
        when: Literal["setup", "call"],
        result: Literal["passed", "failed", "skipped"],
        longrepr: str | tuple[str, int, str] | None,
    ) -> pytest.TestReport:
        rep = pytest.TestReport(
            item.nodeid, item.location, {k: 1 for k in item.keywords}, result, longrepr,
            when, duration=outcome.duration if when == "call" else 0.0, start=now, stop=now,
            user_properties=item.user_properties,
        )  # fmt: skip
        ihook.pytest_runtest_logreport(report=rep)
        return rep

    if outcome.outcome == "skipped":
        lineno = (item.location[1] or 0) + 1  # reports count lines from 1
        report("setup", "skipped", (str(item.path), lineno, f"Skipped: {outcome.message}"))
    else:
        report("setup", "passed", None)
        report("call", outcome.outcome, outcome.message or None)
    # Tear down whatever earlier host-side tests left that `nextitem` does not share;
    # otherwise the next item's setup finds a stale fixture stack.
    if item.session.shouldfail or item.session.shouldstop:
        nextitem = None
    call = pytest.CallInfo.from_call(
        lambda: item.session._setupstate.teardown_exact(nextitem), when="teardown"
    )
    ihook.pytest_runtest_logreport(report=pytest.TestReport.from_item_and_call(item, call))
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    state = terminalreporter.config.stash.get(_STATE, None)
    if state is None or not state.counts:
        return
    terminalreporter.write_line(f"netem tests: {summary_line(state.counts, state.run)}")


def summary_line(counts: dict[str, int], result: guest.GuestResult | None) -> str:
    """Where the netem tests ran: natively, in which guest (and what it cost), or not."""
    parts = []
    for mode, n in counts.items():
        if mode == "native":
            parts.append(f"{n} natively (host kernel has sch_netem)")
        elif mode == "guest":
            backend = os.environ.get(guest.BACKEND_ENV, "")
            parts.append(f"{n} inside this {guest.LABELS.get(backend, 'guest')}")
        elif mode == "batch" and result is not None and result.backend:
            part = (
                f"{n} in one {result.label} (boot {result.boot_seconds:.1f} s + run "
                f"{result.run_seconds:.1f} s)"
            )
            if result.passed_over:
                part += f"; passed over: {result.passed_over_text()}"
            parts.append(part)
        elif mode == "batch":
            parts.append(f"{n} failed: no guest booted")
        elif mode == "fail":
            parts.append(f"{n} failed unrun ({REQUIRE_REASON})")
        else:
            parts.append(f"{n} skipped ({SKIP_REASON})")
    return ", ".join(parts)
