#!/usr/bin/env bash
# Session-2 GPU job (issues 5 and 7), stages run as separate device calls on one warm machine.
# The tracked weights (~92 MB) exceed the 64 MiB that travels, so each stage needs only one world's weights
# in the tree (the others are moved aside on the dev box before the call).
#   data      wheels; training/held-out/probe data; PPO in the real engine (background); both probes
#   finetune  doom-takecover v2: v1 + class-weighted termination (needs the takecover weights in the tree)
#   eval      eval takecover v2 and explore (with probes), web bench, then PPO in imagination (background)
#   finish    wait for PPO, score both policies in the real game and the dream, pack
set -uo pipefail
source tools/device_setup.sh
W=/root/odx; mkdir -p $W/runs $W/data $W/export $W/reports $W/probes $W/ppo
stage=$1; shift
og() { python3 -m odyssey_gym.cli "$@"; }
PPO_STEPS=${PPO_STEPS:-800000}
pack() { tar -C $W -cf - "$@" | split -b 15M - $OUT/pack.tar.; ls -la $OUT; }
case $stage in
data)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  og collect --world doom-takecover --steps 200000 --workers 15 --out $W/data/takecover --seed 2 --no-progress | tail -2
  og collect --world doom-takecover --steps 20000 --workers 10 --out $W/data/takecover-heldout --seed 900002 --no-progress | tail -1
  og collect --world doom-explore --steps 20000 --workers 10 --out $W/data/explore-heldout --seed 900001 --no-progress | tail -1
  og collect --world doom-takecover --steps 60000 --workers 15 --out $W/data/takecover-probe --seed 800002 --no-progress | tail -1
  og collect --world doom-explore --steps 60000 --workers 15 --out $W/data/explore-probe --seed 800001 --no-progress | tail -1
  setsid nohup python3 agents/train_ppo.py --world doom-takecover --in real --steps $PPO_STEPS --num-envs 16 \
    --out $W/ppo/real --no-progress > $W/ppo/real.log 2>&1 < /dev/null &
  pids=""
  for w in takecover explore; do  # .devcarry/doom-*/train_summary.json: the world models' training seeds, checked
    og train-probe --world doom-$w --data $W/data/$w-probe --val-data $W/data/$w-heldout --weights .devcarry/doom-$w \
      --out $W/probes/doom-$w --steps ${PROBE_STEPS:-3000} --batch 128 > $W/probes/$w.log 2>&1 &
    pids="$pids $!"
  done
  wait $pids
  cat $W/probes/*.log; tail -3 $W/ppo/real.log
  pack probes
  ;;
finetune)
  setsid nohup python3 -m odyssey_gym.cli train --config configs/doom-takecover-finetune.yaml --data $W/data/takecover \
    --out $W/runs/takecover-v2 --phase dyn --init-from odyssey_gym/weights/doom-takecover --max-minutes ${FT_MIN:-7} \
    --export $W/export/doom-takecover --no-progress > $W/runs/takecover-v2.log 2>&1 < /dev/null &
  end=$((SECONDS + ${WAIT_S:-530}))
  while [ $SECONDS -lt $end ] && [ ! -f $W/export/doom-takecover/train_summary.json ]; do sleep 15; done
  sleep 5; tail -n 12 $W/runs/takecover-v2.log; tail -2 $W/ppo/real.log
  ls -la $W/export/doom-takecover
  ;;
eval)
  cp -r $W/probes/doom-takecover $W/export/doom-takecover/probe
  og eval --world doom-takecover --weights $W/export/doom-takecover --data $W/data/takecover-heldout \
    --out $W/reports/doom-takecover > $W/reports/eval-takecover.log 2>&1
  og eval --world doom-explore --probe $W/probes/doom-explore --data $W/data/explore-heldout \
    --out $W/reports/doom-explore > $W/reports/eval-explore.log 2>&1
  grep -v "rollout:" $W/reports/eval-takecover.log | tail -n 30; grep -v "rollout:" $W/reports/eval-explore.log | tail -n 12
  tail -2 $W/ppo/real.log
  python3 benchmarks/bench_web.py --world doom-explore --device cuda --counts ${WEB_COUNTS:-1,8,32,64,128,256} \
    --seconds-per-count 8 --warmup-s 3 --gpu-price 2.0 --json-out $W/reports/bench_web.json > $W/reports/bench_web.md 2>&1
  tail -n 25 $W/reports/bench_web.md
  setsid nohup python3 agents/train_ppo.py --world doom-takecover --in imagination --weights $W/export/doom-takecover \
    --steps $PPO_STEPS --num-envs 16 --out $W/ppo/dream --no-progress > $W/ppo/dream.log 2>&1 < /dev/null &
  sleep 20; tail -3 $W/ppo/dream.log
  pack reports
  ;;
finish)
  end=$((SECONDS + ${WAIT_S:-420}))
  while [ $SECONDS -lt $end ] && [ ! -f $W/ppo/dream/policy.zip ]; do sleep 10; done
  tail -3 $W/ppo/dream.log $W/ppo/real.log
  for r in dream real; do
    python3 agents/evaluate.py --world doom-takecover --policy $W/ppo/$r/policy.zip --episodes 100 --num-envs 16 --videos 0
  done
  python3 agents/evaluate.py --world doom-takecover --policy $W/ppo/dream/policy.zip --episodes 100 --num-envs 16 \
    --videos 0 --in imagination --weights $W/export/doom-takecover
  rm -rf $W/ppo/*/checkpoints
  mkdir -p $W/ship && cp -r $W/export/doom-takecover $W/ship/ && cp $W/runs/takecover-v2.log $W/ship/
  pack ppo ship
  ;;
esac
