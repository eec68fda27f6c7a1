#!/bin/sh
# Plays a QEMU 10.0.2 built without the gdbstub: it rejects -gdb with the
# message QEMU prints for an option it does not have.
for a in "$@"; do
	if [ "$a" = -gdb ]; then
		echo "qemu-system-x86_64: -gdb: invalid option" >&2
		exit 1
	fi
done
echo "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"
echo "Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers"
