"""Users' own congestion-control policies: loaded from a file, a module or an entry point,
checked against the interface, named in every error, and run beside the built-ins.

The example plug-in (examples/cc/aimd.py) is copied outside the repository first, so
nothing here finds it through the package. The netns tests compare it with DCQCN on the
shipped incast file, and check that a plug-in failing at run time ends the run with one
line naming its file and leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cc import (
    CongestionControlError,
    canonical_cc,
    cc_label,
    make_cc,
    resolve_cc,
)
from fabric.cc import registry as reg
from fabric.checks import cc_warnings
from fabric.errors import TopologyError
from fabric.kinds import load
from fabric.run.roce import parse_variants

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cc" / "aimd.py"


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test loads its plug-ins anew (the registry caches them per process)."""
    monkeypatch.setattr(reg, "_LOADED", {})


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """The example policy, copied to a directory of its own."""
    path = tmp_path / "plugins" / "my_cc.py"
    path.parent.mkdir()
    shutil.copy(EXAMPLE, path)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_a_policy_from_a_file_runs_its_own_logic(plugin: Path) -> None:
    cc = make_cc(f"{plugin}:Aimd", line_rate_bps=1_000_000_000, base_rtt_ns=10_000, mtu=1000)
    assert (cc.name, cc.needs, cc.rate_bps) == ("aimd", frozenset({"ecn"}), 1_000_000_000)
    assert cc.window_bytes == 1250  # one bandwidth-delay product
    cc.on_ack(100, 1000, rtt_ns=10_000, ecn_echo=True)
    assert cc.window_bytes == 1000  # cut by beta = 0.5, floored at one packet
    cc.on_ack(200, 1000, rtt_ns=10_000, ecn_echo=True)
    assert cc.window_bytes == 1000  # no second cut within a round trip
    cc.on_ack(300, 1000)
    assert cc.window_bytes == 2000  # one packet more per window acknowledged
    tuned = make_cc(f"{plugin}:Aimd", line_rate_bps=1_000_000_000, base_rtt_ns=10_000,
                    beta=0.25)
    tuned.on_ack(1, 1000, ecn_echo=True)
    assert tuned.window_bytes == 1000
    assert cc_label(f"{plugin}:Aimd") == "aimd"


def test_a_relative_file_is_found_from_the_topology_and_stored_absolute(
    plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topo_file = plugin.parent.parent / "t.yaml"
    _write(topo_file, """\
        name: t
        nodes: {a: {}, b: {}}
        links: [{endpoints: [a, b], rate: 1Gbps}]
        classes:
          - {name: kv, dscp: 26, priority: 3, cc: plugins/my_cc.py:Aimd,
              cc_params: {beta: 0.25}}
        traffic:
          flows: [{pattern: one-to-one, from: a, to: b, class: kv, transport: roce,
                   tokens: 16}]
        """)
    topo = load(str(topo_file))
    kv = topo.classes[0]
    assert kv.cc == f"{plugin}:Aimd"
    assert kv.cc_params == (("beta", 0.25),)
    # what the policy needs is read from the policy, whatever its name
    assert any(w.startswith("class kv (line 5): aimd reacts to ECN marks, but nothing marks")
               for w in cc_warnings(topo))
    # from another working directory the stored path still resolves
    monkeypatch.chdir("/")
    assert resolve_cc(kv.cc).name == "aimd"


@pytest.mark.parametrize(("cc", "params", "message"), [
    ("plugins/nope.py:Aimd", "", "congestion control plugins/nope.py:Aimd: no such file "
     "({dir}/plugins/nope.py)"),
    ("plugins/my_cc.py:Nope", "", "congestion control plugins/my_cc.py:Nope: "
     "{dir}/plugins/my_cc.py has no Nope"),
    ("plugins/my_cc.py:Aimd", "cc_params: {beta: 2}", "aimd: beta must be in (0, 1), got 2"),
    ("plugins/my_cc.py:Aimd", "cc_params: {gamma: 1}", "aimd: unknown parameter(s) gamma; its "
     "parameters are: beta, increase_mtus"),
])
def test_bad_plugins_in_a_topology_are_errors_at_their_line(
    plugin: Path, cc: str, params: str, message: str
) -> None:
    topo_file = plugin.parent.parent / "t.yaml"
    _write(topo_file, f"""\
        name: t
        nodes: {{a: {{}}, b: {{}}}}
        links: [{{endpoints: [a, b], rate: 1Gbps}}]
        classes:
          - name: kv
            cc: {cc}
            {params}
        """)
    with pytest.raises(TopologyError) as err:
        load(str(topo_file))
    expected = message.format(dir=plugin.parent.parent)
    assert err.value.message == expected
    assert err.value.line == (7 if params else 6)


@pytest.mark.parametrize(("source", "message"), [
    ("def broken(:\n", r"importing {path} failed \(line 1\): SyntaxError: "),
    ("raise RuntimeError('no GPU here')\n", r"importing {path} failed: RuntimeError: no GPU "
     r"here$"),
    ("class Policy:\n    name = 'x'\n", r"<class '.*Policy'> is not a subclass of "
     r"fabric.cc.CongestionControl$"),
    ("from dataclasses import dataclass\nfrom fabric.cc import CongestionControl\n"
     "@dataclass(frozen=True)\nclass P:\n    pass\n"
     "class Policy(CongestionControl):\n    name = 'half'\n    Params = P\n",
     r"Policy does not implement rate_bps$"),
    ("from fabric.cc import CongestionControl\n"
     "class Policy(CongestionControl):\n    name = 'nop'\n    Params = dict\n"
     "    rate_bps = 1\n",
     r"Policy.Params must be a dataclass \(its parameters and their defaults\)$"),
    ("from fabric.cc import Dcqcn\nclass Policy(Dcqcn):\n    pass\n",
     r"its name 'dcqcn' is a built-in policy's; choose another$"),
    ("from fabric.cc import Dcqcn\nclass Policy(Dcqcn):\n    name = 'd2'\n"
     "    needs = frozenset({'telepathy'})\n",
     r"unknown needs \['telepathy'\]; a policy may need ecn, fine_rtt, int$"),
])
def test_a_plugin_that_breaks_the_interface_is_named(
    tmp_path: Path, source: str, message: str
) -> None:
    path = tmp_path / "bad_cc.py"
    path.write_text(source)
    spec = f"{path}:Policy"
    with pytest.raises(CongestionControlError) as err:
        resolve_cc(spec)
    text = str(err.value)
    assert text.startswith(f"congestion control {spec}: ")
    assert re.search(message.format(path=re.escape(str(path))), text), text


def test_a_plugin_that_raises_at_run_time_is_one_error_naming_its_file(tmp_path: Path) -> None:
    path = tmp_path / "fragile.py"
    path.write_text(EXAMPLE.read_text().replace(
        "        if ecn_echo:\n",
        "        if acked_bytes > 4000:\n            raise ZeroDivisionError('too much')\n"
        "        if ecn_echo:\n"))
    cc = make_cc(f"{path}:Aimd", line_rate_bps=10**9, base_rtt_ns=10_000)
    cc.on_ack(1, 1000)
    with pytest.raises(CongestionControlError, match=(
            rf"^congestion control aimd \({re.escape(str(path))}\): on_ack raised "
            r"ZeroDivisionError: too much$")):
        cc.on_ack(2, 5000)


def test_a_module_and_an_entry_point_name_a_policy(
    plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package: `module:Class`, or the name its entry point gives."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(plugin, site / "aimd_cc_demo.py")
    dist = site / "aimd_cc_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aimd-cc-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fabric.cc]\naimd = aimd_cc_demo:Aimd\n")
    monkeypatch.syspath_prepend(str(site))
    assert resolve_cc("aimd_cc_demo:Aimd").name == "aimd"
    assert resolve_cc("aimd").name == "aimd"
    assert canonical_cc("aimd") == "aimd"
    with pytest.raises(CongestionControlError, match=r"^unknown congestion control 'reno'; "
                       r"choose one of none, dcqcn, timely, swift, hpcc, dctcp, aimd, or name "
                       r"your own as FILE.py:Class or module:Class$"):
        resolve_cc("reno")


def test_an_installed_plugin_that_fails_to_load_is_named_not_called_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_cc_demo.py").write_text("raise ImportError('needs libfoo')\n")
    dist = site / "broken_cc_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-cc-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fabric.cc]\nbroken = broken_cc_demo:Policy\n")
    monkeypatch.syspath_prepend(str(site))
    expected = ("congestion control broken (entry point broken_cc_demo:Policy): loading it "
                "failed: ImportError: needs libfoo")
    topo_file = _write(tmp_path / "t.yaml", """\
        name: t
        nodes: {a: {}, b: {}}
        links: [{endpoints: [a, b], rate: 1Gbps}]
        classes:
          - {name: kv, cc: broken}
        """)
    with pytest.raises(TopologyError) as err:
        load(str(topo_file))
    assert (err.value.message, err.value.line) == (expected, 5)
    topo = load(str(ROOT / "topologies" / "roce-incast.yaml"))
    with pytest.raises(Exception, match=rf"^--cc: {re.escape(expected)}$"):
        parse_variants(topo, "dcqcn,broken", None)


def test_cc_option_compares_a_plugin_with_the_built_ins(plugin: Path) -> None:
    topo = load(str(ROOT / "topologies" / "roce-incast.yaml"))
    variants = parse_variants(topo, f"dcqcn,{plugin}:Aimd", None)
    assert [v.label for v in variants] == ["dcqcn", "aimd"]
    assert variants[1].cc == f"{plugin}:Aimd"
    with pytest.raises(Exception, match=r"^--cc: congestion control ./nope.py:X: no such file"):
        parse_variants(topo, "./nope.py:X", None)


# ---- on a real fabric (root) ------------------------------------------------------------


def _run(*args: str):  # noqa: ANN202
    from fabric.cli import cli

    return CliRunner().invoke(cli, list(args), prog_name="fabric")


@pytest.mark.netns
def test_a_plugin_runs_beside_dcqcn_on_the_incast_fabric(
    plugin: Path, tmp_path: Path, state_dir: Path
) -> None:
    out = tmp_path / "out"
    result = _run("run", str(ROOT / "topologies" / "roce-incast.yaml"), "--cc",
                  f"dcqcn,{plugin}:Aimd", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in json.loads((out / "comparison.json").read_text())
            ["variants"]}
    assert set(rows) == {"dcqcn", "aimd"}
    for name, row in rows.items():
        assert row["errors"] == [], name
        assert row["goodput_bps"] > 0, name
    # the plug-in reacted: marks were seen, and it kept the queue no longer than no control
    assert rows["aimd"]["ecn_marks"] > 0
    summary = json.loads((out / "aimd" / "summary.json").read_text())
    assert summary["integrity"]["ok"]
    assert re.search(r"^aimd\s", result.stdout, re.M)


@pytest.mark.netns
def test_a_plugin_failing_mid_run_ends_it_with_its_file_named(
    tmp_path: Path, state_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from fabric.net.kernel import Kernel

    path = tmp_path / "fragile.py"
    path.write_text(EXAMPLE.read_text().replace(
        "    def on_cnp(self, now_ns: int) -> None:\n",
        "    def on_cnp(self, now_ns: int) -> None:\n        raise RuntimeError('cnp!')\n"))
    result = _run("run", str(ROOT / "topologies" / "roce-incast.yaml"), "--cc",
                  f"{path}:Aimd", "--out", str(tmp_path / "out"), "--timeout", "60")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "fabric: the run had errors (see above)"
    assert "died mid-run" in result.stdout
    err = capfd.readouterr().err  # the node processes' own stderr
    assert f"congestion control aimd ({path}): on_cnp raised RuntimeError: cnp!" in err
    assert "Traceback" not in err
    assert not [ns for ns in Kernel.list_netns() if ns.startswith("fab.roce-incast.")]
