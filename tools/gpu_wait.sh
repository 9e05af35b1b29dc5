#!/usr/bin/env bash
# Follow tools/gpu_final.sh for up to $1 seconds, then bring back whatever reports exist.
W=/root/odx; R=$W/reports; end=$((SECONDS + $1))
while [ $SECONDS -lt $end ] && [ ! -f $R/DONE ]; do sleep 10; done
for f in $R/eval-*.log $R/bench.log; do [ -f $f ] && { echo "== $f"; tr '\r' '\n' < $f | grep -v "rollout:" | tail -n 12; }; done
tar -C $W -czf $OUT/reports.tgz reports; ls -la $OUT
