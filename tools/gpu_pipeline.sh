#!/usr/bin/env bash
# The GPU job, in stages, each a separate device call on one warm machine:
#   collect   record training + held-out data for both worlds (seeds listed in the model cards)
#   train     start both trainings in the background (setsid), detached from the call
#   wait N    follow the logs for up to N seconds, stop early when both runs have exported
#   eval      `odyssey-gym eval` + `odyssey-gym bench` on the exported weights
#   pack      bring weights, reports and logs back through $OUT (split into <= 15 MiB parts)
set -uo pipefail
source tools/device_setup.sh
W=/root/odx; mkdir -p $W/runs $W/data $W/export $W/reports
stage=$1; shift
og() { python3 -m odyssey_gym.cli "$@"; }
case $stage in
collect)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  og collect --world doom-explore   --steps ${EXPLORE_STEPS:-300000} --workers 15 --out $W/data/explore   --seed 1 --no-progress
  og collect --world doom-takecover --steps ${TAKECOVER_STEPS:-200000} --workers 15 --out $W/data/takecover --seed 2 --no-progress
  og collect --world doom-explore   --steps 20000 --workers 10 --out $W/data/explore-heldout   --seed 900001 --no-progress
  og collect --world doom-takecover --steps 20000 --workers 10 --out $W/data/takecover-heldout --seed 900002 --no-progress
  du -sh $W/data/*
  ;;
train)
  mins=$1; share=${2:-0.7}
  python3 tools/gpu_probe_train.py $W/configs $mins $share || exit 1
  for w in explore takecover; do
    setsid nohup python3 -m odyssey_gym.cli train --config $W/configs/doom-$w.yaml --data $W/data/$w --out $W/runs/$w \
      --max-minutes $mins --export $W/export/doom-$w --no-progress ${RESUME:-} > $W/runs/$w.log 2>&1 < /dev/null &
  done
  sleep ${SETTLE:-75}; tail -n 6 $W/runs/*.log; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  ;;
wait)
  end=$((SECONDS + $1))
  while [ $SECONDS -lt $end ]; do
    sleep 30
    done=0; for w in explore takecover; do [ -f $W/export/doom-$w/config.json ] && done=$((done+1)); done
    [ $done -eq 2 ] && ! pgrep -f "odyssey_gym.cli train" >/dev/null && break
  done
  for w in explore takecover; do echo "== $w"; tail -n 8 $W/runs/$w.log; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  ;;
eval)
  for w in explore takecover; do
    og eval --world doom-$w --weights $W/export/doom-$w --data $W/data/$w-heldout --out $W/reports/doom-$w ${EVAL_ARGS:-} \
      > $W/reports/eval-$w.log 2>&1 &
  done
  wait
  for w in explore takecover; do grep -v "rollout:" $W/reports/eval-$w.log | tail -n 45; done
  ;;
pack)
  cp $W/runs/*.log $W/reports/ 2>/dev/null
  tar -C $W -cf - export reports | split -b 15M - $OUT/pack.tar.
  ls -la $OUT
  ;;
esac
