#!/usr/bin/env bash
# Measure the shipped weights on the GPU: eval for each world, one after the other (timings alone on the GPU),
# then the speed benchmark. Runs detached (setsid); `tools/gpu_wait.sh` follows it and packs the reports.
source tools/device_setup.sh
W=/root/odx; R=$W/reports; mkdir -p $R
for w in explore takecover; do
  timeout 420 python3 -m odyssey_gym.cli eval --world doom-$w --weights odyssey_gym/weights/doom-$w \
    --data $W/data/$w-heldout --out $R/doom-$w > $R/eval-$w.log 2>&1
done
timeout 400 python3 -m odyssey_gym.cli bench --device cuda --out $R/BENCHMARKS.md --json $R/bench.json \
  --engine-seconds 5 > $R/bench.log 2>&1
touch $R/DONE
