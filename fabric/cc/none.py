"""`none`: no congestion control; the sender always paces at line rate with no window.

The baseline the closed-loop tests compare against: it is what an uncontrolled RoCE sender
(or a UDP blaster) does, so a bottleneck's queue only stops growing when the buffer drops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fabric.cc.base import CongestionControl

__all__ = ["NoCongestionControl", "NoneParams"]


@dataclass(frozen=True, slots=True)
class NoneParams:
    """`none` takes no parameters."""


class NoCongestionControl(CongestionControl):
    """Line rate, no window, ignores every event."""

    name: ClassVar[str] = "none"
    Params: ClassVar[type[NoneParams]] = NoneParams

    @property
    def rate_bps(self) -> int:
        return self.line_rate_bps
