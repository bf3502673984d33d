#!/usr/bin/env bash
# Install everything fabric needs on a fresh Debian/Ubuntu machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# iproute2: `ip netns exec`; ping/iperf3: link checks and benchmarks; user-mode-linux + kmod:
# real netem on kernels without sch_netem (tests); tcpdump: captures; tshark: decodes RoCEv2
# captures (a test checks our packets dissect as InfiniBand).
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    iproute2 iputils-ping iperf3 user-mode-linux kmod procps tcpdump tshark >/dev/null
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "fabric needs Python >= 3.11 (found $(python3 --version 2>&1))" >&2
    exit 1
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
fi
pip_args=(-q --disable-pip-version-check)
# A distribution's own Python refuses system-wide pip installs (PEP 668). This machine is
# dedicated to emulation and runs as root, so install into it anyway.
if python3 -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    pip_args+=(--break-system-packages)
fi
python3 -m pip install "${pip_args[@]}" -e '.[test]'
echo "fabric installed: $(command -v fabric || echo "$(python3 -m site --user-base)/bin/fabric")"
