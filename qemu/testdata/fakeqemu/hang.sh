#!/bin/sh
# Plays a QEMU that never answers: it records its pid in $SCTRACE_FAKE_PID
# and sleeps in a child, which must not outlive the check either.
echo $$ >"$SCTRACE_FAKE_PID"
sleep 60 &
echo $! >>"$SCTRACE_FAKE_PID"
wait
