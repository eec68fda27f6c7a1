#!/usr/bin/env bash
# Fetch a current QEMU release for sctrace without installing it.
#
#   scripts/fetch-qemu.sh
#
# Debian 12 (bookworm) ships QEMU 7.2; its bookworm-backports suite serves
# QEMU 10.0. This script downloads the backports' qemu-system-x86,
# qemu-system-common and qemu-system-data with `apt-get download`, unpacks
# them with `dpkg -x` into one directory under the cache
#
#   ${SCTRACE_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sctrace/qemu}/<version>/
#
# and writes a wrapper script `qemu-system-x86_64` beside the unpacked tree
# that runs the unpacked binary with its firmware directories (-L). The
# wrapper's path is printed as the last line of standard output, ready for
# `sctrace run --qemu PATH`; progress goes to standard error.
#
# A QEMU already unpacked there is reused without asking apt anything. As
# root, the script adds bookworm-backports to apt's sources when no source
# names it (the file /etc/apt/sources.list.d/sctrace-bookworm-backports.list,
# on the mirror the existing sources use), runs `apt-get update` when apt
# does not know the backports' packages yet, and installs the shared
# libraries the unpacked binary needs and the system lacks.
#
# Needs apt-get, apt-cache and dpkg on Debian 12.
set -euo pipefail

suite=bookworm-backports
pkgs=(qemu-system-x86 qemu-system-common qemu-system-data)
cache="${SCTRACE_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sctrace/qemu}"
list=/etc/apt/sources.list.d/sctrace-bookworm-backports.list

say() { echo "fetch-qemu: $*" >&2; }
die() { say "$*"; exit 1; }

# cached prints the wrapper of the newest QEMU already unpacked, if any.
cached() {
	local w
	w="$(ls -d "$cache"/*/qemu-system-x86_64 2>/dev/null | sort -V | tail -n1 || true)"
	[ -n "$w" ] && [ -x "$w" ] && echo "$w"
}

mkdir -p "$cache"
# Tests in several packages may fetch at the same time: one at a time.
exec 9>"$cache/.lock"
if command -v flock >/dev/null; then
	flock 9
fi

if w="$(cached)"; then
	say "QEMU already in $(dirname "$w")"
	echo "$w"
	exit 0
fi

for tool in apt-cache apt-get dpkg ldd; do
	command -v "$tool" >/dev/null || die "$tool not found (a Debian 12 system is needed)"
done
codename="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
[ "$codename" = bookworm ] ||
	die "this script fetches Debian 12's $suite QEMU; this system is '${codename:-unknown}' (install qemu-system-x86 from its own archive instead)"
root=no
[ "$(id -u)" = 0 ] && root=yes

# mirror prints the Debian archive URI the existing sources use.
mirror() {
	local m
	m="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
		grep -v '^[[:space:]]*#' | grep -oE '(https?|mirror\+https?)://[^ ]+/debian/?( |$)' | grep -v -- '-security' | head -n1 | tr -d ' ' || true)"
	echo "${m:-http://deb.debian.org/debian}"
}

# candidate prints the version of qemu-system-x86 the suite offers.
candidate() {
	apt-cache madison qemu-system-x86 2>/dev/null | awk -v s="$suite" '$0 ~ s"/" {print $3; exit}'
}

if ! grep -rqs -- "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
	[ "$root" = yes ] || die "no apt source names $suite; as root, run this script again (it adds one), or add it yourself"
	m="$(mirror)"
	say "adding $suite ($m) to apt's sources in $list"
	echo "deb ${m%/} $suite main" >"$list"
fi

version="$(candidate)"
if [ -z "$version" ]; then
	[ "$root" = yes ] || die "apt does not know $suite's qemu-system-x86 yet; run apt-get update as root"
	say "running apt-get update"
	for try in 1 2 3; do
		apt-get update -qq >&2 && break
		[ "$try" = 3 ] && die "apt-get update failed three times"
		sleep $((try * 5))
	done
	version="$(candidate)"
	[ -n "$version" ] || die "$suite serves no qemu-system-x86 for this architecture"
fi

dir="$cache/${version#*:}"
tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
sandbox=()
[ "$root" = yes ] && sandbox=(-o APT::Sandbox::User=root)
specs=()
for p in "${pkgs[@]}"; do specs+=("$p=$version"); done
say "downloading ${specs[*]}"
for try in 1 2 3; do
	(cd "$tmp" && apt-get download -q "${sandbox[@]}" -t "$suite" "${specs[@]}" >&2) && break
	[ "$try" = 3 ] && die "apt-get download failed three times"
	sleep $((try * 5))
done
for deb in "$tmp"/*.deb; do
	dpkg -x "$deb" "$tmp/root"
done
bin="$tmp/root/usr/bin/qemu-system-x86_64"
[ -x "$bin" ] || die "the packages hold no usr/bin/qemu-system-x86_64"

# The backports binary is built for bookworm, but may link libraries a
# minimal system lacks: install them, or say which.
missing="$(ldd "$bin" | awk '/not found/ {print $1}' | sort -u)"
if [ -n "$missing" ]; then
	[ "$root" = yes ] || die "the unpacked QEMU needs libraries this system lacks: $(echo $missing); install them (as root, this script does)"
	debs=()
	for lib in $missing; do
		d="$(apt-cache search --names-only "^${lib%%.so*}[0-9.-]*\$" | awk '{print $1}' | head -n1)"
		[ -n "$d" ] || d="$(apt-file search -l "$lib" 2>/dev/null | head -n1 || true)"
		[ -n "$d" ] || die "the unpacked QEMU needs $lib, and no package named after it was found"
		debs+=("$d")
	done
	say "installing the libraries it needs: ${debs[*]}"
	apt-get install -y -q "${debs[@]}" >&2
	still="$(ldd "$bin" | awk '/not found/ {print $1}')"
	[ -z "$still" ] || die "still missing after the install: $(echo $still)"
fi

# The wrapper finds the tree beside it, so the cache may be moved.
cat >"$tmp/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# QEMU unpacked by sctrace's scripts/fetch-qemu.sh: its own binary with its
# own firmware (BIOS, option ROMs) directories.
d="$(dirname "$(readlink -f "$0")")/root"
exec "$d/usr/bin/qemu-system-x86_64" -L "$d/usr/share/qemu" -L "$d/usr/share/seabios" "$@"
EOF
chmod +x "$tmp/qemu-system-x86_64"
"$tmp/qemu-system-x86_64" --version >&2 || die "the unpacked QEMU does not run"

rm -rf "$dir"
mkdir -p "$dir"
mv "$tmp/root" "$dir/root"
mv "$tmp/qemu-system-x86_64" "$dir/qemu-system-x86_64"
say "unpacked QEMU $version in $dir"
echo "$dir/qemu-system-x86_64"
