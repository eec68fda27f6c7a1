#!/usr/bin/env bash
# Installs what sctrace needs at run and test time when it is missing:
# QEMU (qemu-system-x86_64), and for the tests tmux (the TUI end-to-end
# tests), gdb (the Linux tests count instructions with it too), and gcc,
# binutils and the static C library (the /init rebuild and the test
# programs for --exec), from Debian's packages. Safe to run again: it does nothing when everything is
# there.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v gdb >/dev/null 2>&1 || need+=(gdb)
# The /init rebuild test and the --exec tests build static programs.
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v as >/dev/null 2>&1 || need+=(binutils)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ "${#need[@]}" -eq 0 ]; then
	exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo="sudo"
	else
		echo "setup: need root to install ${need[*]}; run: apt-get update && apt-get install -y ${need[*]}" >&2
		exit 1
	fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "setup: no apt-get here; install ${need[*]} with your package manager" >&2
	exit 1
fi
echo "setup: installing ${need[*]} from Debian's packages" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v qemu-system-x86_64 >/dev/null
echo "setup: $(qemu-system-x86_64 --version | head -n 1)" >&2
