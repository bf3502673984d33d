"""Signals, ownership and liveness for real (root): SIGTERM and SIGHUP undo like Ctrl-C, a
killed run's fabric is stale and rebuilt, a second run never takes over the first's fabric,
and the backend probe leaves no namespace (issue 16)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric import cli as cli_module
from fabric.net import lifecycle
from fabric.net.kernel import Kernel, probe_qdisc_kinds

pytestmark = pytest.mark.netns

SLOW = """
name: {name}
nodes: {{a: {{}}, b: {{}}}}
links:
  - {{endpoints: [a, b], rate: 50Mbps, delay: 2ms}}
traffic:
  flows:
    - {{pattern: one-to-one, from: a, to: b, tokens: {tokens}, requests: 3}}
"""


def ours(name: str) -> list[str]:
    return [ns for ns in Kernel.list_netns() if ns.startswith(f"fab.{name}.")]


def engines(name: str) -> list[int]:
    """Link engine (or any) processes still serving fabric `name`'s state directory."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if f"/{name}/".encode() in cmd and b"fabric" in cmd and int(pid) != os.getpid():
                out.append(int(pid))
    return out


def _default_interrupts() -> None:
    """In the child: the signals these tests send at their defaults, whatever the test run
    inherited (`nohup` ignores SIGHUP; a shell's background job, SIGINT), as in a terminal."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def fabric(state_dir: Path, *args: str, wait: bool = True, **kw):
    env = {**os.environ, "FABRIC_STATE_DIR": str(state_dir)}
    argv = [sys.executable, "-m", "fabric.cli", *args]
    kw.setdefault("preexec_fn", _default_interrupts)
    if wait:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, **kw)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **kw)


def wait_for(cond, timeout: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.fixture
def topo_file(tmp_path: Path, fabric_name: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(SLOW.format(name=fabric_name, tokens=400))
    return path


@pytest.mark.parametrize(("sig", "status", "word"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    (signal.SIGHUP, 129, "terminated (SIGHUP)"),
])
def test_sigterm_and_sighup_undo_like_ctrl_c(sig, status, word, fabric_name, state_dir,
                                             topo_file, tmp_path):
    proc = fabric(state_dir, "run", str(topo_file), "--out", str(tmp_path / "out"), wait=False)
    wait_for(lambda: len(ours(fabric_name)) == 2)
    time.sleep(1.5)  # the traffic is running
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert err.rstrip().endswith(f"fabric: {word}")
    assert "Traceback" not in err
    assert ours(fabric_name) == []
    assert not (state_dir / fabric_name).exists()
    assert engines(fabric_name) == []


def test_a_killed_runs_fabric_is_stale_and_rebuilt(fabric_name, state_dir, topo_file,
                                                   tmp_path):
    proc = fabric(state_dir, "run", str(topo_file), "--out", str(tmp_path / "o1"), wait=False)
    wait_for(lambda: (st := lifecycle.FabricState.load(fabric_name)) is not None
             and st.status == "up")
    proc.kill()
    proc.communicate(timeout=30)
    assert len(ours(fabric_name)) == 2  # SIGKILL undoes nothing
    status = fabric(state_dir, "status")
    assert f"{fabric_name}: stale (its run, pid {proc.pid}, is gone" in status.stdout
    assert lifecycle.running(fabric_name) is None
    # `up` of the same file is not refused: it removes the remains and builds afresh
    topo_file.write_text(SLOW.format(name=fabric_name, tokens=8))
    again = fabric(state_dir, "run", str(topo_file), "--out", str(tmp_path / "o2"))
    assert again.returncode == 0, again.stderr
    assert f"removed fabric {fabric_name} left by a run that is gone (pid {proc.pid}" \
        in again.stderr
    assert "using running fabric" not in again.stderr
    assert ours(fabric_name) == []
    assert engines(fabric_name) == []


def test_a_second_run_never_takes_over_the_first(fabric_name, state_dir, topo_file, tmp_path):
    first = fabric(state_dir, "run", str(topo_file), "--out", str(tmp_path / "o1"), wait=False)
    wait_for(lambda: (st := lifecycle.FabricState.load(fabric_name)) is not None
             and st.status == "up")
    second = fabric(state_dir, "run", str(topo_file), "--out", str(tmp_path / "o2"))
    assert second.returncode == 1
    assert second.stderr.strip() == (
        f"fabric: fabric {fabric_name} is in use by another fabric command (pid {first.pid}, "
        f"run {lifecycle.FabricState.load(fabric_name).run_id}): wait for it to end; two runs "
        "on one fabric would share its addresses and ports")
    down = fabric(state_dir, "down", fabric_name)
    assert down.returncode == 1
    assert f"`fabric down --force {fabric_name}` if you mean it" in down.stderr
    up = fabric(state_dir, "up", str(topo_file))
    assert up.returncode == 1
    assert "is in use by another fabric command" in up.stderr
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err  # the first run was not disturbed
    assert "integrity: OK" in out
    assert ours(fabric_name) == []


def test_a_kept_fabric_is_leased_to_one_run_at_a_time(fabric_name, state_dir, topo_file,
                                                      tmp_path):
    up = fabric(state_dir, "up", str(topo_file))
    assert up.returncode == 0, up.stderr
    st = lifecycle.FabricState.load(fabric_name)
    assert st.kept
    assert not st.stale  # its owner, `fabric up`, has exited: kept fabrics stay live
    run = fabric(state_dir, "run", str(topo_file), "--out", str(tmp_path / "o1"), wait=False)
    wait_for(lambda: lifecycle.FabricState.load(fabric_name).user_pid == run.pid)
    second = fabric(state_dir, "run", str(topo_file), "--out", str(tmp_path / "o2"))
    assert second.returncode == 1
    assert f"is in use by another fabric command (pid {run.pid}" in second.stderr
    assert f"in use by pid {run.pid}" in fabric(state_dir, "status").stdout
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "using running fabric" in err
    assert lifecycle.FabricState.load(fabric_name).user_pid == 0  # the lease ended
    assert len(ours(fabric_name)) == 2  # and the kept fabric stays
    down = fabric(state_dir, "down", fabric_name)
    assert down.returncode == 0, down.stderr
    assert ours(fabric_name) == []


def test_down_force_ends_another_runs_fabric(fabric_name, state_dir, topo_file, tmp_path):
    run = fabric(state_dir, "run", str(topo_file), "--out", str(tmp_path / "o1"), wait=False)
    wait_for(lambda: (st := lifecycle.FabricState.load(fabric_name)) is not None
             and st.status == "up")
    down = fabric(state_dir, "down", "--force", fabric_name)
    assert down.returncode == 0, down.stderr
    assert ours(fabric_name) == []
    run.communicate(timeout=120)
    assert run.returncode != 0  # its fabric went away under it, and it says so
    assert ours(fabric_name) == []


def test_the_backend_probe_leaves_no_namespace():
    before = set(Kernel.list_netns())
    results = probe_qdisc_kinds({"tbf": {"rate": "1000000bit", "burst": 3000, "limit": 10000},
                                 "nosuchqdisc": {}})
    assert results["tbf"] is None
    assert results["nosuchqdisc"] is not None
    assert set(Kernel.list_netns()) == before
    assert not [ns for ns in Kernel.list_netns() if ns.startswith("fab.doctor.")]


def test_an_internal_error_exits_70_and_says_how_to_report(monkeypatch, tmp_path):
    def broken(_file):  # noqa: ANN001, ANN202
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli_module, "_load", broken)
    result = CliRunner().invoke(cli_module.cli, ["check", str(tmp_path / "x.yaml")])
    assert result.exit_code == cli_module.EXIT_INTERNAL == 70
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("fabric: internal error: ZeroDivisionError: division by zero. This "
                           "is a bug in fabric, not in your input: please report it")
    assert "Traceback" in result.stderr
