"""Which congestion-control policy a name means: the built-ins, and users' own plug-ins.

A policy is named by one of:

- a built-in name: `none`, `dcqcn`, `timely`, `swift`, `hpcc`, `dctcp`;
- an installed plug-in's entry point name (group `fabric.cc`, value `module:Class`);
- `module.path:Class` for a class in an importable module (an installed package);
- `path/to/file.py:Class` for a class in a Python file (relative to the topology file where
  a topology names it, else to the working directory).

A plug-in class subclasses `fabric.cc.CongestionControl`, sets `name` and a frozen `Params`
dataclass, implements `rate_bps`, and declares in `needs` what it reacts to (see base.py);
docs/cc-plugins.md shows one. Loading checks all of that and names the file in every error.
A plug-in's instances are wrapped so an exception it raises at run time becomes one
`CongestionControlError` naming the policy and its file, not a traceback from the transport.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from fabric.cc.base import (
    CC_NAMES,
    DEFAULT_MTU,
    NEEDS,
    CongestionControl,
    CongestionControlError,
    UnknownCongestionControl,
)
from fabric.cc.dcqcn import Dcqcn
from fabric.cc.dctcp import Dctcp
from fabric.cc.hpcc import Hpcc
from fabric.cc.none import NoCongestionControl
from fabric.cc.swift import Swift
from fabric.cc.timely import Timely

__all__ = ["ENTRY_POINT_GROUP", "canonical_cc", "cc_label", "is_plugin", "make_cc", "resolve_cc"]

ENTRY_POINT_GROUP = "fabric.cc"
BUILTINS: dict[str, type[CongestionControl]] = {
    cls.name: cls for cls in (NoCongestionControl, Dcqcn, Timely, Swift, Hpcc, Dctcp)
}
assert tuple(BUILTINS) == CC_NAMES
# Plug-ins loaded in this process, by canonical spec: a node opens one queue pair per peer and
# class, and a file must be executed once, not once per queue pair.
_LOADED: dict[str, type[CongestionControl]] = {}


def is_plugin(spec: str) -> bool:
    """Whether `spec` names a plug-in rather than a built-in policy."""
    return isinstance(spec, str) and spec.strip().lower() not in BUILTINS


def canonical_cc(spec: str, base_dir: str | Path | None = None) -> str:
    """The spec every process resolves the same way: a built-in's lower-case name, a file
    plug-in's absolute path, anything else as written. Loads it, so a bad spec fails here."""
    resolve_cc(spec, base_dir)
    name = spec.strip()
    if name.lower() in BUILTINS:
        return name.lower()
    file, sep, cls = name.rpartition(":")
    if sep and _is_file(file):
        return f"{_absolute(file, base_dir)}:{cls}"
    return name


def cc_label(spec: str) -> str:
    """A short name for tables and directory names: the policy's `name`."""
    return resolve_cc(spec).name


def resolve_cc(spec: str, base_dir: str | Path | None = None) -> type[CongestionControl]:
    """The policy class `spec` names; CongestionControlError (naming the file) if it cannot
    be loaded or does not implement the interface."""
    if not isinstance(spec, str) or not spec.strip():
        raise CongestionControlError(f"congestion control must be a name, got {spec!r}")
    name = spec.strip()
    builtin = BUILTINS.get(name.lower())
    if builtin is not None:
        return builtin
    file, sep, cls_name = name.rpartition(":")
    key = f"{_absolute(file, base_dir)}:{cls_name}" if sep and _is_file(file) else name
    if key in _LOADED:
        return _LOADED[key]
    if sep and _is_file(file):
        cls = _from_file(name, _absolute(file, base_dir), cls_name)
    elif sep:
        cls = _from_module(name, file, cls_name)
    else:
        cls = _from_entry_point(name)
    _LOADED[key] = _checked(name, cls)
    return _LOADED[key]


def make_cc(name: str, /, *, line_rate_bps: int, base_rtt_ns: int, mtu: int = DEFAULT_MTU,
            **params: Any) -> CongestionControl:
    """Build the policy `name` names for one flow; `params` override its defaults.

    >>> make_cc("dcqcn", line_rate_bps=100_000_000_000, base_rtt_ns=8_000, g=1 / 128)
    """
    cls = resolve_cc(name)
    fields = [f.name for f in dataclasses.fields(cls.Params)]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        allowed = ", ".join(fields) if fields else "none"
        raise CongestionControlError(
            f"{cls.name}: unknown parameter(s) {', '.join(unknown)}; "
            f"its parameters are: {allowed}")
    try:
        policy_params = cls.Params(**params)
    except CongestionControlError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plug-in's own validation, named
        raise CongestionControlError(f"{cls.name}: {type(exc).__name__}: {exc}") from None
    if is_plugin(name):
        policy = _user_code(cls, "creating it", cls, line_rate_bps, base_rtt_ns, mtu,
                            policy_params)
        return _Guarded(policy)
    return cls(line_rate_bps, base_rtt_ns, mtu, policy_params)


def _user_code(cls: type, what: str, fn: Any, *args: Any, **kw: Any) -> Any:  # noqa: ANN401
    """`fn(*args, **kw)` from a plug-in; any exception it raises becomes one
    CongestionControlError naming the policy, its file and what was being done."""
    try:
        return fn(*args, **kw)
    except CongestionControlError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of user code, named
        raise CongestionControlError(
            f"congestion control {getattr(cls, 'name', cls.__name__)} ({_where(cls)}): "
            f"{what} raised {type(exc).__name__}: {exc}") from None


# ---- loading ------------------------------------------------------------------------------


def _is_file(path: str) -> bool:
    return path.endswith(".py") or "/" in path


def _absolute(path: str, base_dir: str | Path | None) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path(base_dir or Path.cwd()) / p
    return str(p.resolve())


def _from_file(spec: str, path: str, cls_name: str) -> Any:  # noqa: ANN401
    if not Path(path).is_file():
        raise CongestionControlError(f"congestion control {spec}: no such file ({path})")
    module_name = f"fabric_cc_plugin_{abs(hash(path)):x}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise CongestionControlError(f"congestion control {spec}: {path} is not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses look their module up while being made
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure of user code, named
        del sys.modules[module_name]
        where = ""
        if isinstance(exc, SyntaxError) and exc.lineno:
            where = f" (line {exc.lineno})"
        raise CongestionControlError(
            f"congestion control {spec}: importing {path} failed{where}: "
            f"{type(exc).__name__}: {exc}") from None
    if not hasattr(module, cls_name):
        raise CongestionControlError(f"congestion control {spec}: {path} has no {cls_name}")
    return getattr(module, cls_name)


def _from_module(spec: str, module_name: str, cls_name: str) -> Any:  # noqa: ANN401
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of user code, named
        raise CongestionControlError(
            f"congestion control {spec}: importing {module_name} failed: "
            f"{type(exc).__name__}: {exc}") from None
    if not hasattr(module, cls_name):
        raise CongestionControlError(f"congestion control {spec}: {module_name} has no "
                                     f"{cls_name}")
    return getattr(module, cls_name)


def _from_entry_point(name: str) -> Any:  # noqa: ANN401
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        plugins = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        known = ", ".join([*CC_NAMES, *plugins])
        raise UnknownCongestionControl(
            f"unknown congestion control {name!r}; choose one of {known}, or name your own "
            "as FILE.py:Class or module:Class")
    try:
        return found[0].load()
    except Exception as exc:  # noqa: BLE001 - any failure of user code, named
        raise CongestionControlError(
            f"congestion control {name} (entry point {found[0].value}): loading it failed: "
            f"{type(exc).__name__}: {exc}") from None


def _checked(spec: str, cls: Any) -> type[CongestionControl]:  # noqa: ANN401
    """`cls` if it implements the interface, else an error saying what is missing."""
    where = f"congestion control {spec}"
    if not (inspect.isclass(cls) and issubclass(cls, CongestionControl)):
        raise CongestionControlError(f"{where}: {cls!r} is not a subclass of "
                                     "fabric.cc.CongestionControl")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise CongestionControlError(f"{where}: {cls.__name__} sets no `name` (a string)")
    if cls.name.lower() in BUILTINS:
        raise CongestionControlError(f"{where}: its name {cls.name!r} is a built-in policy's; "
                                     "choose another")
    if not (inspect.isclass(getattr(cls, "Params", None)) and
            dataclasses.is_dataclass(cls.Params)):
        raise CongestionControlError(f"{where}: {cls.__name__}.Params must be a dataclass "
                                     "(its parameters and their defaults)")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise CongestionControlError(f"{where}: {cls.__name__} does not implement {missing}")
    unknown = set(getattr(cls, "needs", frozenset())) - set(NEEDS)
    if unknown:
        raise CongestionControlError(f"{where}: unknown needs {sorted(unknown)}; a policy "
                                     f"may need {', '.join(sorted(NEEDS))}")
    return cls


def _where(cls: type) -> str:
    try:
        return inspect.getfile(cls)
    except TypeError:
        return cls.__module__


class _Guarded(CongestionControl):
    """A plug-in's policy with every call guarded: an exception in user code becomes one
    CongestionControlError naming the policy and its file (the node reports it as a line)."""

    name = "guarded"
    Params = dict  # never built: the wrapped policy holds its own

    def __init__(self, inner: CongestionControl) -> None:  # noqa: D107 - no base init
        self._inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.needs = inner.needs  # type: ignore[misc]
        self.line_rate_bps = inner.line_rate_bps
        self.base_rtt_ns = inner.base_rtt_ns
        self.mtu = inner.mtu
        self.params = inner.params

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:  # noqa: ANN401
        return _user_code(type(self._inner), what, fn, *args, **kw)

    @property
    def rate_bps(self) -> int:
        return self._call("rate_bps", lambda: self._inner.rate_bps)

    @property
    def window_bytes(self) -> int | None:
        return self._call("window_bytes", lambda: self._inner.window_bytes)

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               ecn_echo: bool = False, int_records: Any = None) -> None:  # noqa: ANN401
        self._call("on_ack", self._inner.on_ack, now_ns, acked_bytes, rtt_ns=rtt_ns,
                   ecn_echo=ecn_echo, int_records=int_records)

    def on_nak(self, now_ns: int) -> None:
        self._call("on_nak", self._inner.on_nak, now_ns)

    def on_cnp(self, now_ns: int) -> None:
        self._call("on_cnp", self._inner.on_cnp, now_ns)

    def on_rtt(self, now_ns: int, rtt_ns: int) -> None:
        self._call("on_rtt", self._inner.on_rtt, now_ns, rtt_ns)

    def on_timer(self, now_ns: int) -> None:
        self._call("on_timer", self._inner.on_timer, now_ns)

    def next_timer_ns(self) -> int | None:
        return self._call("next_timer_ns", self._inner.next_timer_ns)

    def __repr__(self) -> str:
        return repr(self._inner)
