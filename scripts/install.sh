#!/usr/bin/env bash
# Install everything fabric needs on a fresh Debian/Ubuntu machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# iproute2: `ip netns exec`; ping/iperf3: link checks and benchmarks; tcpdump: captures;
# tshark: decodes RoCEv2 captures (a test checks our packets dissect as InfiniBand).
# Guest kernels for real netem where the host kernel has no sch_netem (the netem tests and
# `bench_links.py --netem-in-guest`): user-mode-linux + kmod (a kernel as a process; panics
# on CPUs with AMX), and qemu-system-x86 + busybox-static (QEMU boots Debian's kernel
# through virtme-ng, which builds its initramfs with busybox).
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    iproute2 iputils-ping iperf3 user-mode-linux kmod procps tcpdump tshark \
    qemu-system-x86 busybox-static >/dev/null
# QEMU's guest kernel: Debian's own, with sch_netem as a module. Unpacked into a directory
# of ours rather than installed, so the host's /boot, bootloader and initramfs stay as they
# are (installing linux-image-amd64 on a user's machine could change what it boots).
# Not under /var/cache: virtme-ng's guest init mounts a tmpfs over /var/cache.
install_guest_kernel() {
    local root=/var/lib/fabric/guest-kernel pkg kver tmp
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        echo "warning: no linux-image-amd64 in the package lists: no QEMU guest kernel for netem tests" >&2
        return 0
    fi
    kver=${pkg#linux-image-}
    if [ -f "$root/boot/vmlinuz-$kver" ] && [ -f "$root/lib/modules/$kver/modules.dep" ]; then
        return 0
    fi
    tmp=$(mktemp -d) && chmod 755 "$tmp"
    chown _apt "$tmp" 2>/dev/null || true  # apt downloads as _apt where that user exists
    if ! (cd "$tmp" && apt-get download -qq "$pkg"); then
        echo "warning: could not download $pkg: no QEMU guest kernel for netem tests" >&2
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$root.new" && mkdir -p "$root.new"
    dpkg-deb -x "$tmp"/*.deb "$root.new"
    # Hardware no guest has (sound, graphics, cameras, wireless, ...): about half the size.
    (cd "$root.new/lib/modules/$kver/kernel" && rm -rf sound drivers/gpu drivers/media \
        drivers/iio drivers/staging drivers/infiniband drivers/usb drivers/hid drivers/hwmon \
        drivers/net/wireless drivers/net/ethernet drivers/bluetooth net/wireless net/bluetooth)
    depmod -b "$root.new" "$kver"  # the package ships no modules.dep; its postinst makes one
    rm -rf "$root" "$tmp" && mv "$root.new" "$root"
    echo "guest kernel for netem tests: $root/boot/vmlinuz-$kver"
}
if [ "$(dpkg --print-architecture)" = amd64 ]; then
    install_guest_kernel
fi
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
