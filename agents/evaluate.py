"""Score a trained policy in the REAL engine: mean ± std over N episodes, a histogram, a few MP4 episodes.

    python agents/evaluate.py --world doom-takecover --policy runs/ppo/dream/policy.zip --episodes 100

`--in imagination` scores the same policy inside the world model instead (the "dream score", reported
beside the real one to show how much the agent exploits the model). The frame stack comes from the
meta.json that agents/train_ppo.py writes beside the policy (or --frame-stack).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="doom-takecover")
    p.add_argument("--policy", required=True, help="an SB3 PPO .zip (agents/train_ppo.py writes OUT/policy.zip)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--in", dest="source", choices=("real", "imagination"), default="real")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--frame-stack", type=int, default=None, help="default: from the policy's meta.json")
    p.add_argument("--videos", type=int, default=3, help="MP4s of env 0's first episodes")
    p.add_argument("--out", default=None, help="report dir (default: next to the policy, eval-<in>/)")
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default=None, help="world-model weights for --in imagination")
    p.add_argument("--seed", type=int, default=10_000, help="episode seeds (keep apart from training's)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the greedy action")
    p.add_argument("--no-progress", action="store_true", help="no progress bar over the episodes")
    a = p.parse_args(argv)
    if a.episodes < 1 or a.num_envs < 1 or a.videos < 0:
        p.error("--episodes and --num-envs must be >= 1 and --videos >= 0")
    return a


def run_episodes(model, env, episodes: int, deterministic: bool, videos: int, progress: bool = False):
    """Each env plays ceil(episodes / n) episodes (so short episodes are not over-counted); returns the first
    `episodes` scores in env order, their lengths, and env 0's frames for its first `videos` episodes.
    `progress`: a bar (stderr, with ETA) over the episodes counted so far: 100 real take_cover episodes take minutes."""
    from tqdm import tqdm

    n = env.num_envs
    quota = math.ceil(episodes / n)
    scores: list[list[float]] = [[] for _ in range(n)]
    lengths: list[list[int]] = [[] for _ in range(n)]
    clips, frames = [], []
    obs = env.reset()
    bar = tqdm(total=n * quota, desc="episodes", unit="ep", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    while min(len(s) for s in scores) < quota:
        if len(clips) < videos:
            frames.append(np.asarray(obs[0, ..., -3:]))  # the newest frame of env 0's stack
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, _, dones, infos = env.step(action)
        for i in np.flatnonzero(dones):
            ep = infos[i].get("episode")
            if ep is not None and len(scores[i]) < quota:
                scores[i].append(float(ep["r"]))
                lengths[i].append(int(ep["l"]))
                bar.update(1)
            if i == 0 and len(clips) < videos:
                clips.append(np.stack(frames))
                frames = []
    bar.close()
    flat_s = [s for per in zip(*scores) for s in per][:episodes]  # round-robin over envs
    flat_l = [x for per in zip(*lengths) for x in per][:episodes]
    return flat_s, flat_l, clips


def save_histogram(scores, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(scores, bins=20, color="tab:blue", alpha=0.8)
    ax.axvline(np.mean(scores), color="black", linestyle="--", label=f"mean {np.mean(scores):.0f}")
    ax.set_xlabel("episode score")
    ax.set_ylabel("episodes")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_clip(frames, path, fps):
    from odyssey_gym.video import write_mp4

    write_mp4(path, np.repeat(np.repeat(frames, 4, axis=1), 4, axis=2), fps)  # 64x64 is tiny on screen


def main(argv=None) -> int:
    args = parse_args(argv)
    policy = Path(args.policy)
    if not policy.is_file():
        print(f"evaluate: no policy file at {policy}", file=sys.stderr)
        return 2
    meta_path = policy.parent / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("world") and meta["world"] != args.world:
        print(f"evaluate: {policy} was trained for {meta['world']!r}, not {args.world!r}", file=sys.stderr)
        return 2
    frame_stack = args.frame_stack or meta.get("frame_stack") or 4
    from odyssey_gym.data.policies import load_sb3
    from odyssey_gym.envs.sb3 import make_sb3_env
    from odyssey_gym.envs.vector_env import resolve_device
    from odyssey_gym.worlds import get_world

    spec = get_world(args.world)
    device = resolve_device(args.device)
    env = make_sb3_env(args.world, args.source, num_envs=args.num_envs, seed=args.seed, frame_stack=frame_stack,
                       device=str(device), weights=args.weights)
    model = load_sb3(str(policy), device=str(device))
    h, w, c = env.observation_space.shape
    if model.observation_space.shape not in ((h, w, c), (c, h, w)):  # SB3 stores image spaces channels-first
        print(f"evaluate: the policy expects observations {model.observation_space.shape}, the env gives "
              f"{env.observation_space.shape} (frame stack {frame_stack}?)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    scores, lengths, clips = run_episodes(model, env, args.episodes, not args.stochastic, args.videos,
                                          progress=not args.no_progress)
    wall = time.perf_counter() - t0
    env.close()
    out = Path(args.out) if args.out else policy.parent / f"eval-{args.source}"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "world": args.world, "policy": str(policy), "scored_in": args.source, "episodes": len(scores),
        "mean": round(float(np.mean(scores)), 1), "std": round(float(np.std(scores)), 1),
        "min": float(np.min(scores)), "max": float(np.max(scores)), "median": float(np.median(scores)),
        "mean_length_steps": round(float(np.mean(lengths)), 1), "deterministic": not args.stochastic,
        "seed": args.seed, "wall_seconds": round(wall, 1), "trained_in": meta.get("trained_in"),
        "agent_steps": meta.get("agent_steps"), "scores": scores,
        "score_meaning": spec.reward_meaning,
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    title = (f"{args.world}: {meta.get('trained_in', '?')}-trained policy scored in the {args.source} "
             f"{'game' if args.source == 'real' else 'world model'}\n{report['mean']:.0f} ± {report['std']:.0f} "
             f"over {len(scores)} episodes")
    save_histogram(scores, out / "histogram.png", title)
    for i, clip in enumerate(clips):
        save_clip(clip, out / f"episode_{i}.mp4", fps=spec.fps)
    print(f"{args.world} ({args.source}): {report['mean']:.1f} ± {report['std']:.1f} over {len(scores)} episodes "
          f"(min {report['min']:.0f}, max {report['max']:.0f}); report in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
