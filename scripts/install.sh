#!/usr/bin/env bash
# Install everything fabric needs on a fresh Debian/Ubuntu machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# iproute2: `ip netns exec`; ping/iperf3: link checks; user-mode-linux + kmod: real netem on
# kernels without sch_netem (tests); tcpdump/tshark-free captures.
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    iproute2 iputils-ping iperf3 user-mode-linux kmod procps tcpdump >/dev/null
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
echo "fabric installed: $(command -v fabric)"
