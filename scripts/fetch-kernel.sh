#!/usr/bin/env bash
# Fetch a Debian cloud kernel for `sctrace run linux`.
#
#   scripts/fetch-kernel.sh [SERIES]
#
# SERIES is a kernel series Debian packages as
# linux-image-<SERIES>...-cloud-amd64-unsigned: 6.1 (the default) or 6.12.
# The newest version of that series the package archive serves is chosen
# (old ABI numbers disappear from the archive), downloaded with
# `apt-get download`, and unpacked with `dpkg -x` under the cache directory
#
#   ${SCTRACE_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sctrace/kernels}/<package>/
#
# A kernel already unpacked there is reused. The path of its bzImage
# (boot/vmlinuz-...) is printed as the last line of standard output;
# progress goes to standard error.
#
# Needs apt-get, apt-cache and dpkg (Debian or Ubuntu). As root it runs
# `apt-get update` once when apt knows no such package yet.
set -euo pipefail

series="${1:-6.1}"
case "$series" in
	*[!0-9.]* | "") echo "fetch-kernel: series must look like 6.1 or 6.12, not '$series'" >&2; exit 2 ;;
esac
cache="${SCTRACE_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sctrace/kernels}"
for tool in apt-cache apt-get dpkg; do
	command -v "$tool" >/dev/null || { echo "fetch-kernel: $tool not found (a Debian or Ubuntu system is needed)" >&2; exit 1; }
done

# candidates lists the packages of the series, newest first.
candidates() {
	apt-cache search --names-only "^linux-image-${series//./\\.}[.-].*-cloud-amd64-unsigned\$" |
		awk '{print $1}' | sort -V -r
}

updated=no
update() {
	[ "$(id -u)" = 0 ] && [ "$updated" = no ] || return 1
	echo "fetch-kernel: running apt-get update" >&2
	apt-get update -qq >&2
	updated=yes
}

# fetch tries the candidates newest first; it prints the bzImage's path and
# succeeds with the first one that is cached or downloads.
fetch() {
	local pkgs pkg dir img tmp
	pkgs="$(candidates)"
	[ -n "$pkgs" ] || return 1
	mkdir -p "$cache"
	for pkg in $pkgs; do
		dir="$cache/$pkg"
		img="$(ls "$dir"/boot/vmlinuz-* 2>/dev/null | head -n1 || true)"
		if [ -n "$img" ]; then
			echo "fetch-kernel: $pkg already in $dir" >&2
			echo "$img"
			return 0
		fi
		tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
		echo "fetch-kernel: downloading $pkg" >&2
		sandbox=(); [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
		if ! (cd "$tmp" && apt-get download -q "${sandbox[@]}" "$pkg" >&2); then
			echo "fetch-kernel: $pkg could not be downloaded; trying an older one" >&2
			rm -rf "$tmp"
			continue
		fi
		dpkg -x "$tmp"/*.deb "$tmp/root"
		rm -rf "$dir"
		mv "$tmp/root" "$dir"
		rm -rf "$tmp"
		img="$(ls "$dir"/boot/vmlinuz-* | head -n1)"
		echo "fetch-kernel: unpacked $pkg in $dir" >&2
		echo "$img"
		return 0
	done
	return 1
}

# Tests in several packages may fetch at the same time: one at a time, so
# that none replaces a kernel another is booting.
mkdir -p "$cache"
exec 9>"$cache/.lock"
if command -v flock >/dev/null; then
	flock 9
fi

# apt's package lists may be missing or stale (the versions they name gone
# from the archive): on failure, update them once and try again.
if fetch || { update && fetch; }; then
	exit 0
fi
echo "fetch-kernel: no linux-image-${series}*-cloud-amd64-unsigned package could be downloaded (run apt-get update as root?)" >&2
exit 1
