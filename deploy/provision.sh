#!/usr/bin/env bash
# Prepares a machine (or a lab namespace) to be a halb load-balancer node
# or a DSR backend. The one script behind deploy/Vagrantfile, `cargo xtask
# run` and the namespace lab, so that all three prepare nodes the same way.
#
#   provision.sh lb      [--no-packages] [--config FILE]
#   provision.sh backend --vip ADDR [--vip ADDR ...] [--iface IFACE] [--no-packages]
#
# lb:      mounts bpffs (the data plane pins its maps there), installs the
#          config (FILE → /etc/halb/halb.toml) and, when packages are
#          wanted, the systemd unit.
# backend: puts the VIPs on lo and stops the host from answering ARP for
#          them (arp_ignore=1, arp_announce=2): the DSR backend side. An
#          IPv6 VIP goes on lo as /128 without DAD (nodad), and an nftables
#          table (inet halb-dsr) drops Neighbor Solicitations for it: IPv6
#          has no arp_ignore, and a backend answering them would take the
#          VIP's traffic from the load balancer.
set -euo pipefail

role=${1:-}
shift || true
packages=1
vips=()
iface=""
config=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-packages) packages=0 ;;
        --vip) vips+=("$2"); shift ;;
        --iface) iface=$2; shift ;;
        --config) config=$2; shift ;;
        *) echo "provision.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
here=$(cd "$(dirname "$0")" && pwd)

apt_install() {
    [ "$packages" = 1 ] || return 0
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# An IPv6 address as one 128-bit hex number (nft matches raw header bits).
v6hex() {
    local a=$1 head tail out="" g i n
    local -a h=() t=()
    if [[ $a == *::* ]]; then
        head=${a%%::*}
        tail=${a##*::}
    else
        head=$a
        tail=""
    fi
    [ -n "$head" ] && IFS=: read -ra h <<<"$head"
    [ -n "$tail" ] && IFS=: read -ra t <<<"$tail"
    n=$((8 - ${#h[@]} - ${#t[@]}))
    for g in "${h[@]}"; do out+=$(printf %04x $((16#$g))); done
    for ((i = 0; i < n; i++)); do out+=0000; done
    for g in "${t[@]}"; do out+=$(printf %04x $((16#$g))); done
    echo "0x$out"
}

case "$role" in
    lb)
        apt_install iproute2 ethtool bpftool curl ca-certificates build-essential git
        if ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
            mount -t bpf bpf /sys/fs/bpf
        fi
        if [ -n "$config" ]; then
            install -D -m 0644 "$config" /etc/halb/halb.toml
        fi
        if [ "$packages" = 1 ] && [ -d /etc/systemd/system ]; then
            install -m 0644 "$here/halb.service" /etc/systemd/system/halb.service
            if grep -qs '^\[bgp\]' /etc/halb/halb.toml; then
                install -D -m 0644 "$here/halb-bgp.conf" /etc/systemd/system/halb.service.d/bgp.conf
            fi
        fi
        ;;
    backend)
        [ ${#vips[@]} -gt 0 ] || { echo "provision.sh backend: --vip is required" >&2; exit 2; }
        apt_install iproute2 nginx-light
        v6=()
        for vip in "${vips[@]}"; do
            case "$vip" in
                *:*.*) echo "provision.sh: write IPv6 VIP $vip in hex groups, not with an embedded IPv4 address" >&2; exit 2 ;;
                # Deprecated (preferred_lft 0): never the source of the
                # backend's own packets, answered as any address.
                *:*) ip -6 addr replace "$vip/128" dev lo nodad preferred_lft 0; v6+=("$vip") ;;
                *) ip addr replace "$vip/32" dev lo ;;
            esac
        done
        if [ ${#v6[@]} -gt 0 ]; then
            apt_install nftables
            rules="table inet halb-dsr {
  chain input {
    type filter hook input priority filter - 10; policy accept;"
            for vip in "${v6[@]}"; do
                # The target address of an NS: 128 bits at bit 64 of ICMPv6.
                rules+="
    icmpv6 type nd-neighbor-solicit @th,64,128 $(v6hex "$vip") counter drop"
            done
            rules+="
  }
}"
            nft delete table inet halb-dsr 2>/dev/null || true
            nft -f - <<<"$rules"
        fi
        sysctl -q -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
        if [ -n "$iface" ]; then
            sysctl -q -w "net.ipv4.conf.$iface.arp_ignore=1" "net.ipv4.conf.$iface.arp_announce=2"
        fi
        ;;
    *)
        echo "usage: provision.sh lb|backend [options]" >&2
        exit 2
        ;;
esac
