#!/bin/sh
# Plays Ubuntu 22.04's QEMU 6.2, older than sctrace supports.
echo "QEMU emulator version 6.2.0 (Debian 1:6.2+dfsg-2ubuntu6.26)"
echo "Copyright (c) 2003-2021 Fabrice Bellard and the QEMU Project developers"
