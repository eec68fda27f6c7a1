#!/bin/sh
# Plays qemu-img, a QEMU tool that is not a system emulator.
echo "qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"
echo "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers"
