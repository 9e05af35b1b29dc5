"""Train a PPO agent (SB3, CnnPolicy) inside the world model ("imagination") or in the real ViZDoom engine.

    python agents/train_ppo.py --world doom-takecover --in imagination --steps 1000000 --out runs/ppo/dream
    python agents/train_ppo.py --world doom-takecover --in real        --steps 1000000 --out runs/ppo/real

Both use the same wrappers (`odyssey_gym.envs.sb3.make_sb3_env`), so the policy trained in one runs in the
other unchanged; score it in the real game with agents/evaluate.py. Checkpoints every --checkpoint-every
agent steps; --resume continues from the newest. TensorBoard logs go to OUT/tb.

Imagined rollouts stay stochastic, as World Models found a deterministic dream easy to exploit: every frame is
sampled from fresh diffusion noise, episodes end with the termination head's (calibrated) probability rather than
at a threshold, and they start from real frames of the start bank.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

META = "meta.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="doom-takecover")
    p.add_argument("--in", dest="source", choices=("imagination", "real"), default="imagination",
                   help="where the agent learns: the world model or the real engine")
    p.add_argument("--steps", type=int, default=1_000_000, help="agent steps (env steps summed over envs)")
    p.add_argument("--out", default=None, help="run dir (default runs/ppo/<world>-<in>)")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--frame-stack", type=int, default=4)
    p.add_argument("--device", default="auto", help="for the policy and the world model: cuda, cpu or auto")
    p.add_argument("--weights", default=None, help="world-model weights dir (default: the shipped ones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-steps", type=int, default=128, help="PPO rollout length per env")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--checkpoint-every", type=int, default=100_000, help="agent steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT")
    p.add_argument("--init-policy", default=None, metavar="ZIP",
                   help="start from this policy (e.g. the last round of agents/dream_loop.py); --steps more are trained")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    for name in ("steps", "num_envs", "frame_stack", "n_steps", "batch_size", "epochs", "checkpoint_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.out is None:
        a.out = f"runs/ppo/{a.world}-{a.source}"
    return a


def newest_checkpoint(run: Path) -> Path | None:
    ckpts = sorted((run / "checkpoints").glob("ppo_*_steps.zip"), key=lambda p: int(p.stem.split("_")[-2]))
    return ckpts[-1] if ckpts else None


def make_callbacks(args, run: Path):
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
    from tqdm.auto import tqdm

    class Progress(BaseCallback):
        """A tqdm bar over agent steps with the running episode score (no `rich` needed)."""

        def _on_training_start(self):
            self.bar = tqdm(total=args.steps, initial=self.model.num_timesteps, unit="step", dynamic_ncols=True,
                            disable=args.no_progress, mininterval=2)

        def _on_step(self):
            self.bar.update(self.model.num_timesteps - self.bar.n)
            buf = self.model.ep_info_buffer
            if buf and self.n_calls % 50 == 0:
                self.bar.set_postfix(score=f"{sum(e['r'] for e in buf) / len(buf):.0f}")
            return True

        def _on_training_end(self):
            self.bar.close()

    every = max(1, args.checkpoint_every // args.num_envs)
    return [CheckpointCallback(every, str(run / "checkpoints"), name_prefix="ppo", save_vecnormalize=True), Progress()]


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from odyssey_gym.envs.sb3 import make_sb3_env
    from odyssey_gym.envs.vector_env import resolve_device

    run = Path(args.out)
    ckpt = newest_checkpoint(run) if args.resume else None
    if args.resume and ckpt is None:
        print(f"train_ppo: --resume but no checkpoint in {run / 'checkpoints'}; starting fresh", file=sys.stderr)
    if not args.resume and (run / "policy.zip").exists():
        print(f"train_ppo: {run} already holds a trained policy; pass --resume or another --out", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    env = make_sb3_env(args.world, args.source, num_envs=args.num_envs, seed=args.seed, frame_stack=args.frame_stack,
                       device=str(device), weights=args.weights)
    # Returns of +4 per step reach ~400 at gamma 0.99; unscaled, the value loss swamps the policy gradient in
    # the shared CNN (measured: 800k real steps learned nothing, 168 vs random 210). Scores stay raw (VecMonitor
    # sits below this wrapper); only the rewards PPO sees are scaled.
    stats = ckpt.parent / f"ppo_vecnormalize_{ckpt.stem.split('_')[-2]}_steps.pkl" if ckpt is not None else None
    env = (VecNormalize.load(str(stats), env) if stats is not None and stats.exists()
           else VecNormalize(env, norm_obs=False, norm_reward=True, gamma=0.99))
    run.mkdir(parents=True, exist_ok=True)
    tb = str(run / "tb")
    try:
        import tensorboard  # noqa: F401  (SB3 refuses tensorboard_log without it)
    except ImportError:
        print("train_ppo: tensorboard is not installed; logging to stdout only (pip install tensorboard)", file=sys.stderr)
        tb = None
    if ckpt is not None:
        model = PPO.load(ckpt, env=env, device=device, tensorboard_log=tb)
        print(f"resumed from {ckpt} at {model.num_timesteps} steps")
    elif args.init_policy:
        if not Path(args.init_policy).is_file():
            print(f"train_ppo: --init-policy {args.init_policy}: no such file", file=sys.stderr)
            return 2
        model = PPO.load(args.init_policy, env=env, device=device, tensorboard_log=tb)
        model.num_timesteps = 0  # --steps counts this run's steps
        print(f"initialised from {args.init_policy}")
    else:
        model = PPO("CnnPolicy", env, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.epochs,
                    learning_rate=args.lr, ent_coef=args.ent_coef, clip_range=0.1, gamma=0.99, gae_lambda=0.95,
                    vf_coef=0.5, max_grad_norm=0.5, tensorboard_log=tb, seed=args.seed, device=device,
                    verbose=0)
    start_steps, t0 = model.num_timesteps, time.perf_counter()
    model.learn(total_timesteps=max(0, args.steps - model.num_timesteps), callback=make_callbacks(args, run),
                reset_num_timesteps=ckpt is None, tb_log_name="ppo")
    wall = time.perf_counter() - t0
    model.save(run / "policy.zip")
    buf = list(model.ep_info_buffer)
    scores = [float(e["r"]) for e in buf]
    meta = {
        "world": args.world, "trained_in": args.source, "frame_stack": args.frame_stack, "num_envs": args.num_envs,
        "agent_steps": int(model.num_timesteps), "seed": args.seed, "weights": args.weights or "shipped",
        "init_policy": args.init_policy,
        "wall_seconds_run": round(wall, 1),
        "agent_steps_per_second": round((model.num_timesteps - start_steps) / max(wall, 1e-9), 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "train_score": {
            "episodes": len(scores), "mean": round(sum(scores) / len(scores), 1) if scores else None,
            "where": "the world model (dream score)" if args.source == "imagination" else "the real engine"},
        "hyperparameters": {**{k: getattr(args, k) for k in ("n_steps", "batch_size", "epochs", "lr", "ent_coef")},
                            "reward_normalization": True},
    }
    if (run / META).exists() and ckpt is not None:  # keep the wall-clock of earlier runs resumed from
        old = json.loads((run / META).read_text())
        meta["wall_seconds_total"] = round(old.get("wall_seconds_total", old.get("wall_seconds_run", 0)) + wall, 1)
    else:
        meta["wall_seconds_total"] = round(wall, 1)
    (run / META).write_text(json.dumps(meta, indent=2))
    env.close()
    print(json.dumps(meta))
    print(f"policy written to {run / 'policy.zip'}; score it in the real game: "
          f"python agents/evaluate.py --world {args.world} --policy {run / 'policy.zip'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
