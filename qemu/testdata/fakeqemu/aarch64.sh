#!/bin/sh
# Plays qemu-system-aarch64 10.0.2: the same banner as qemu-system-x86_64,
# and "aarch64" in QMP's query-target.
case " $* " in
*" -qmp stdio "*)
	echo '{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}'
	cat >/dev/null
	echo '{"return": {}}'
	echo '{"return": {"arch": "aarch64"}}'
	echo '{"return": {}}'
	;;
*)
	echo "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"
	;;
esac
