"""`odyssey-gym eval`: the one trusted way to say how good a world model is.

Writes REPORT_DIR/report.json (every number), report.md (the tables for a model card), a PSNR-vs-horizon
plot and a real-vs-generated strip. Held-out data must come from seeds never trained on.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path


def add_arguments(p) -> None:
    from odyssey_gym.cli import add_device_argument

    p.add_argument("--world", required=True, help="world name, e.g. doom-explore")
    p.add_argument("--weights", default=None, help="weights dir (default: the shipped weights of the world)")
    p.add_argument("--data", required=True, nargs="+", help="held-out dataset dir(s) recorded with unseen seeds")
    p.add_argument("--out", required=True, help="report directory")
    add_device_argument(p)
    p.add_argument("--horizons", default="1,4,16,64")
    p.add_argument("--windows", type=int, default=64, help="held-out windows per horizon")
    p.add_argument("--rollout-steps", type=int, default=10_500, help="long-rollout length (0 to skip)")
    p.add_argument("--rollout-envs", type=int, default=8)
    p.add_argument("--latency-steps", type=int, default=300)
    p.add_argument("--throughput-batch", type=int, default=256)
    p.add_argument("--sampling-steps", type=int, default=None)
    p.add_argument("--renoise", default=None, choices=["ddim", "fresh"],
                   help="input of the denoising passes after the first (default: the weights' `renoise`)")
    p.add_argument("--context-noise", type=float, default=None,
                   help="sigma at which generated frames enter the context (default: the weights' `context_noise`)")
    p.add_argument("--detail-carry", type=float, default=None,
                   help="keep the real frame's detail where the view did not change (0: off; default: the weights' "
                        "`detail_carry`)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                   help="auto: bfloat16 on CUDA (the serving path), float32 on CPU")
    p.add_argument("--compile", action="store_true", help="CUDA graphs / torch.compile in the timed sampler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe", default=None,
                   help="inverse-dynamics probe dir (probe.json + probe.safetensors, trained on real frames only by "
                        "`odyssey-gym train-probe`): adds controllability and probe-feature realism. Default: the "
                        "probe/ folder shipped beside the weights, when there is one")
    p.add_argument("--probe-transitions", type=int, default=2048, help="held-out transitions the probe judges")
    p.add_argument("--no-probe", action="store_true", help="skip controllability and realism even if a probe is shipped")
    p.add_argument("--no-engine-reference", action="store_true",
                   help="skip the realism reference of the real engine under the rollout's held keys (needs the engine)")


def _fmt(x, nd=2):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _pm(se) -> str:
    """' +- 2 SE' after a gap, or nothing where the report has no standard error (older reports, one window)."""
    return "" if se is None or (isinstance(se, float) and math.isnan(se)) else f" ± {2 * se:.2f}"


def run(args) -> int:
    import torch

    from ..data.dataset import open_dataset
    from ..envs.weights import shipped_weights
    from ..model import Sampler, WorldModel, load
    from ..worlds import get_world
    from .fidelity import autoencoder_psnr, head_accuracy
    from .speed import time_sampler
    from .stability import long_rollout

    spec = get_world(args.world)
    if not args.weights:
        shipped_weights(spec.name)  # or the error that says how to pass weights
    from odyssey_gym.envs.vector_env import resolve_device

    device = resolve_device(args.device)
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = (WorldModel.from_pretrained(args.weights, device=device, dtype=dtype) if args.weights
             else load(spec.name, device=device, dtype=dtype))
    if model.config.world != spec.name:
        raise SystemExit(f"weights are for world {model.config.world!r}, not {spec.name!r}")
    model.eval()
    # every sampler of this eval (env, heads, speed, rollout) reads these from the model's config
    if args.renoise is not None:
        model.config.renoise = args.renoise
    if args.context_noise is not None:
        if not 0.0 <= args.context_noise < float("inf"):
            raise SystemExit(f"--context-noise must be a finite number >= 0, got {args.context_noise}")
        model.config.context_noise = args.context_noise
    if args.detail_carry is not None:
        if not 0.0 <= args.detail_carry < float("inf"):
            raise SystemExit(f"--detail-carry must be a finite number >= 0, got {args.detail_carry}")
        model.config.detail_carry = args.detail_carry
    k = model.config.context_frames
    data = open_dataset(args.data, world=spec)
    flat = data.flat(spec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "world": spec.name,
        "weights": _name(args.weights) if args.weights else "shipped",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "data": {"dirs": [_name(d) for d in args.data], "frames": int(len(flat.frames)), "episodes": int(flat.first.sum()),
                 "seeds": sorted({int(e["seed"]) for e in data.episodes})},
        "context_frames": k,
        "sampler": {"sampling_steps": int(args.sampling_steps or model.config.sampling_steps),
                    "renoise": model.config.renoise, "context_noise": model.config.context_noise,
                    "detail_carry": model.config.detail_carry},
    }
    t0 = time.time()
    skw = {} if args.sampling_steps is None else {"sampling_steps": args.sampling_steps}
    horizons = [int(h) for h in args.horizons.split(",")]
    rule = spec.terminal_state
    term_kw = {"terminal_state": rule} if rule and rule[0] in (model.config.state_variables or ()) else {}
    sampler = Sampler(model, batch_size=args.windows, device=device, **skw, **term_kw)
    def save_partial():  # a long run that is cut off still leaves every number measured so far
        (out / "report.json").write_text(json.dumps(report, indent=2))

    report["autoencoder"] = autoencoder_psnr(model, flat, seed=args.seed)
    report["fidelity"] = _fidelity_through_env(spec, model, device, dtype, args, flat, k, horizons)
    report["heads"] = head_accuracy(sampler, flat, k, windows=4 * args.windows, seed=args.seed)
    save_partial()
    print(json.dumps({k_: report[k_] for k_ in ("autoencoder", "fidelity", "heads")}), flush=True)
    probe = None
    probe_dir = None if args.no_probe else (args.probe or _shipped_probe(args.weights, spec.name))
    if probe_dir:
        from .probe import Probe

        probe = Probe.load(probe_dir, device=device)
        if probe.config.world != spec.name:
            raise SystemExit(f"probe is for world {probe.config.world!r}, not {spec.name!r}")
        report["probe"] = {"dir": _name(probe_dir), "trained_steps": probe.config.trained_steps,
                           "train_transitions": probe.config.train_transitions, **probe.config.extra}
        report["controllability"] = _probe_eval(sampler, flat, k, probe, args.probe_transitions, args.seed)
        save_partial()
        print(json.dumps({"controllability": report["controllability"]}), flush=True)
    strip_real, strip_gen = _strip(sampler, flat, k, args.seed)
    del sampler

    bank_f, bank_a = _contexts(flat, k, max(args.rollout_envs, 1), args.seed)
    speed = {}
    for b in (1, args.throughput_batch):
        idx = torch.arange(b) % bank_f.shape[0]
        modes = [("cuda_graph", dict(cuda_graph=True)), ("eager", {})] if device.type == "cuda" else [("eager", {})]
        if args.compile:
            modes.insert(0, ("compile", dict(compile=True)))
        for mode, kw in modes:  # the fastest mode that works on this machine; failures are reported, not hidden
            try:
                s = Sampler(model, batch_size=b, device=device, **kw, **skw)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a fallback is reported below instead
                    s.prepare()  # the sampler falls back to eager by itself: time a mode only if it runs as asked
                if s.fallback_error is not None:
                    raise RuntimeError(s.fallback_error)
                res = time_sampler(s, bank_f[idx], bank_a[idx], steps=args.latency_steps if b == 1 else 50,
                                   discrete=spec.action_kind == "discrete")
                speed[f"batch_{b}"] = {**res, "mode": s.mode}
                del s
                break
            except Exception as e:  # noqa: BLE001
                speed.setdefault("failed_modes", []).append(f"batch {b} {mode}: {type(e).__name__}: {e}"[:300])
                print(f"speed: {mode} failed at batch {b}: {e}")
    report["speed"] = speed
    save_partial()
    print(json.dumps({"speed": speed}), flush=True)
    if args.rollout_steps:
        graph = device.type == "cuda" and not any("cuda_graph" in f for f in speed.get("failed_modes", []))
        s = Sampler(model, batch_size=args.rollout_envs, device=device, cuda_graph=graph, **skw)
        feats = None
        if probe is not None:
            from functools import partial

            from .realism import device_features

            feats = partial(device_features, probe)
        roll = long_rollout(s, spec, bank_f[: args.rollout_envs], bank_a[: args.rollout_envs], steps=args.rollout_steps,
                            seed=args.seed, keep_every=max(1, int(spec.fps)), features=feats)
        kept = roll.pop("kept_frames")
        minute_feats = roll.pop("minute_features")
        if minute_feats is not None:
            roll["realism"] = _minute_realism(probe, flat, minute_feats, args.seed)
            if not args.no_engine_reference:
                roll["realism"]["engine"] = _engine_realism(probe, spec, flat, minute_feats, args)
        report["stability"] = roll
        if kept is not None:
            roll["video"] = _write_video(out / "long_rollout.mp4", kept, fps=10)
        del s
    report["eval_seconds"] = round(time.time() - t0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    from .plots import plot_confusion, plot_psnr, plot_realism

    plot_psnr(report, out / "psnr_vs_horizon.png")
    plot_confusion(report, out / "controllability_confusion.png")
    plot_realism(report, out / "realism_vs_minute.png")
    _save_strip(strip_real, strip_gen, out / "strip.png")
    (out / "report.md").write_text(render_markdown(report))
    print(render_markdown(report))
    print(f"report written to {out}/report.json")
    return 0


def _fidelity_through_env(spec, model, device, dtype, args, flat, k, horizons):
    """Fidelity measured as a user gets it: the public vector env over the same model (no time limit, autoreset
    off, termination by threshold so nothing inside a window ends it)."""
    from gymnasium.vector import AutoresetMode

    from ..envs.vector_env import WorldModelVectorEnv
    from .fidelity import horizon_fidelity

    skw = {} if args.sampling_steps is None else {"sampling_steps": args.sampling_steps}
    env = WorldModelVectorEnv(spec.name, num_envs=args.windows, device=device, weights=model, backend="torch",
                              autoreset_mode=AutoresetMode.DISABLED, max_episode_steps=0, dtype=dtype,
                              termination="threshold", start_bank=_contexts_np(flat, k, 1, args.seed), **skw)
    try:
        return horizon_fidelity(env, flat, k, horizons, args.windows, args.seed)
    finally:
        env.close()


def _name(path) -> str:
    """A folder as a report names it: the last part(s) of its path, never the machine's absolute path (a report
    is shipped beside the weights; `weights/doom-explore/probe` stays readable as `doom-explore/probe`)."""
    parts = Path(path).resolve().parts
    return "/".join(parts[-2:]) if parts[-1] == "probe" else parts[-1]


def _contexts_np(flat, k, n, seed):
    f, a = _contexts(flat, k, n, seed)
    return f.numpy(), a.numpy()


def _shipped_probe(weights, world):
    """WEIGHTS/probe when it holds a probe (the shipped weights' when `weights` is None), else None."""
    from ..model import weights_dir
    from .probe import CONFIG_FILE

    d = Path(weights) if weights else weights_dir(world)
    return d / "probe" if (d / "probe" / CONFIG_FILE).is_file() else None


def _probe_eval(sampler, flat, k, probe, n, seed):
    """The probe on n held-out real transitions and on the model's one-step transitions from the same contexts.

    Real pair: (real frame t, real frame t+1); generated pair: (real frame t, model frame t+1 given the K real
    frames up to t and the true action into t+1). Controllability = generated accuracy / real accuracy.
    """
    import numpy as np
    import torch

    from .fidelity import _gather
    from .probe import controllability, probe_accuracy
    from .realism import frame_features, frechet_distance

    chosen = flat.pick_windows(k + 1, n, np.random.default_rng(seed + 3), repeat=True)
    if len(chosen) == 0:
        return {"transitions": 0}
    bs, device = sampler.B, sampler.device
    mask = torch.ones(bs, dtype=torch.bool, device=device)
    prev, real, gen, acts = [], [], [], []
    for i in range(0, len(chosen), bs):
        part = chosen[i : i + bs]
        take = len(part)
        if take < bs:
            part = np.concatenate([part, np.repeat(part[:1], bs - take)])
        idx = part[:, None] + np.arange(k + 1)[None, :]
        frames, actions = _gather(flat, idx, device)
        with torch.no_grad():
            sampler.reset(frames[:, :k], actions[:, :k], mask)
            g, _, _ = sampler.step(actions[:, k])
        prev.append(frames[:take, k - 1].cpu())
        real.append(frames[:take, k].cpu())
        gen.append(g[:take].cpu())
        acts.append(actions[:take, k].cpu())
    prev, real, gen, acts = (torch.cat(x) for x in (prev, real, gen, acts))
    acc_real = probe_accuracy(probe, prev, real, acts.numpy())
    acc_gen = probe_accuracy(probe, prev, gen, acts.numpy())
    return {
        "transitions": int(len(prev)),
        "real": acc_real,
        "generated": acc_gen,
        "ratio": controllability(acc_gen, acc_real),
        "one_step_realism_frechet": frechet_distance(frame_features(probe, real), frame_features(probe, gen)),
    }


def _against(probe, ref_frames, other_frames, minute_feats) -> dict:
    """Each minute's Fréchet distance (probe-trunk features) to `ref_frames`, beside that reference's floor (its
    distance to `other_frames`, disjoint real frames) and bar (those frames blurred by 2 px): a minute counts
    only when it beats real frames blurred by 2 px."""
    from .realism import frame_features, frechet_distance

    ref = frame_features(probe, ref_frames)
    per = [round(frechet_distance(ref, f), 4) if f is not None and len(f) >= 2 else None for f in minute_feats]
    out = {"per_minute": per, "real_floor": None, "blurred_real": None, "reference_frames": int(len(ref))}
    if len(other_frames) >= 2:
        out["real_floor"] = round(frechet_distance(ref, frame_features(probe, other_frames)), 4)
        out["blurred_real"] = round(frechet_distance(ref, frame_features(probe, _blur_np(other_frames))), 4)
        out["minutes_better_than_blurred_real"] = [v is not None and v < out["blurred_real"] for v in per]
    return out


def _minute_realism(probe, flat, minute_feats, seed, real_frames=4096):
    """Realism of each minute of the rollout against held-out real frames (`_against`), the floor's frames the
    size of a minute's sample, so a reader sees how far from "indistinguishable" each minute is. Target:
    minute 5 within 10% of minute 1.
    """
    import numpy as np

    order = np.random.default_rng(seed + 4).permutation(len(flat.frames))
    n_ref = min(real_frames, len(order) // 2)
    sizes = [len(f) for f in minute_feats if f is not None]
    rest = order[n_ref:n_ref + (max(sizes) if sizes else 0)]
    out = _against(probe, flat.frames[np.sort(order[:n_ref])], flat.frames[np.sort(rest)], minute_feats)
    out["samples_per_minute"] = sizes
    per = out["per_minute"]
    if len(per) >= 5 and per[0] and per[4] is not None:
        out["minute5_vs_minute1"] = round(per[4] / per[0] - 1.0, 4)
    return out


def _engine_realism(probe, spec, flat, minute_feats, args, half: int = 2048):
    """Realism against the like-for-like reference: the real engine under the rollout's own held-key actions.

    `_against` `half` engine frames (floor and bar from another `half`), and `vs_heldout`: the engine frames'
    distance to the held-out play, which no model can beat when measured against that play."""
    import numpy as np

    from .realism import frame_features, frechet_distance
    from .stability import engine_held_key_frames

    try:
        frames = engine_held_key_frames(spec, args.rollout_steps, args.rollout_envs, seed=args.seed,
                                        every=max(1, args.rollout_steps * args.rollout_envs // (2 * half)),
                                        max_frames=2 * half)
    except Exception as e:  # noqa: BLE001 (no engine here: say so in the report, measure the rest)
        return {"skipped": f"{type(e).__name__}: {e}"[:300]}
    order = np.random.default_rng(args.seed + 5).permutation(len(frames))
    n = len(frames) // 2
    ref_frames = frames[np.sort(order[:n])]
    out = _against(probe, ref_frames, frames[np.sort(order[n:2 * n])], minute_feats)
    held = flat.frames[np.sort(np.random.default_rng(args.seed + 4).permutation(len(flat.frames))[:half])]
    out["vs_heldout"] = round(frechet_distance(frame_features(probe, held), frame_features(probe, ref_frames)), 4)
    out["actions"] = (f"held keys (odyssey_gym.eval.actions.held_key_actions), seed {args.seed}, engine reset seeds "
                      f"{args.seed}..{args.seed + args.rollout_envs - 1}")
    return out


def _minute_table(per_minute) -> list[str]:
    return ["| minute | " + " | ".join(str(i + 1) for i in range(len(per_minute))) + " |",
            "|---|" + "---|" * len(per_minute), "| Fréchet | " + " | ".join(_fmt(v, 3) for v in per_minute) + " |"]


def _blur_np(frames, batch=512):
    import numpy as np
    import torch

    from .fidelity import blur2

    return np.concatenate([blur2(torch.from_numpy(frames[i:i + batch])).numpy() for i in range(0, len(frames), batch)])


def _contexts(flat, k, n, seed):
    import numpy as np
    import torch

    chosen = flat.pick_windows(k, n, np.random.default_rng(seed + 1), repeat=True)
    if len(chosen) == 0:
        raise SystemExit(f"no held-out episode is {k} frames long: the data cannot seed a {k}-frame context")
    idx = chosen[:, None] + np.arange(k)[None]
    return torch.from_numpy(flat.frames[idx]), torch.from_numpy(flat.actions[idx])


STRIP_HORIZONS = (1, 2, 4, 8, 16, 32, 64)


def _strip(sampler, flat, k, seed, horizons=STRIP_HORIZONS):
    """Env 0's real and open-loop frames at the given horizons: the side-by-side picture of the card."""
    import numpy as np
    import torch

    h = max(horizons)
    pick = flat.pick_windows(k + h, 1, np.random.default_rng(seed + 2))
    if len(pick) == 0:
        return None, None
    s = int(pick[0])
    idx = s + np.arange(k + h)
    frames = torch.from_numpy(flat.frames[idx]).to(sampler.device)
    acts = torch.from_numpy(flat.actions[idx]).to(sampler.device)
    b = sampler.B
    sampler.reset(frames[None, :k].expand(b, -1, -1, -1, -1), acts[None, :k].expand(b, -1, -1),
                  torch.ones(b, dtype=torch.bool, device=sampler.device))
    gen = []
    for i in range(h):
        g, _, _ = sampler.step(acts[None, k + i].expand(b, -1))
        if i + 1 in horizons:
            gen.append(g[0].cpu().numpy())
    return flat.frames[[s + k + j - 1 for j in horizons]], np.stack(gen)


def _save_strip(real, gen, path):
    """Top row real, bottom row generated, one column per strip horizon."""
    if real is None:
        return
    import numpy as np
    from PIL import Image

    top = np.concatenate(list(real), axis=1)
    bottom = np.concatenate(list(gen), axis=1)
    Image.fromarray(np.concatenate([top, bottom], axis=0)).save(path)


def _write_video(path, frames, fps) -> str:
    """Write the MP4; returns what happened, for the report (a machine without moviepy gets no video, said so)."""
    from importlib.util import find_spec

    if find_spec("moviepy") is None:
        print(f"eval: moviepy is not installed, so {path.name} was not written (pip install moviepy)")
        return "skipped: moviepy not installed"
    from ..video import write_mp4

    return write_mp4(path, frames, fps).name


def render_markdown(r: dict) -> str:
    lines = [f"### {r['world']} on {r['device']} ({r.get('dtype', '')})", "",
             f"Held-out data: {r['data']['frames']} frames, {r['data']['episodes']} episodes.", "",
             "Measured through the public env API (`reset(options={\"context\", \"actions\"})`, then `step`); "
             "the gap is to copying the last real frame on the same windows (+- two standard errors over the "
             "windows: another draw of windows moves it about that much).", "",
             "| horizon | teacher-forced PSNR / SSIM | open-loop PSNR / SSIM | copy-last PSNR (tf / ol) | gap dB (tf / ol) "
             "| real blurred 2 px PSNR |",
             "|---|---|---|---|---|---|"]
    for h, v in r["fidelity"].items():
        if not v.get("windows"):
            lines.append(f"| {h} | n/a (no held-out window long enough) | | | | |")
            continue
        tf_gap = v.get("teacher_forced_gap_db", v["teacher_forced_psnr"] - v["teacher_forced_copy_last_psnr"])
        ol_gap = v.get("open_loop_gap_db", v["open_loop_psnr"] - v["open_loop_copy_last_psnr"])
        lines.append(
            f"| {h} | {_fmt(v['teacher_forced_psnr'])} / {_fmt(v['teacher_forced_ssim'], 3)} | "
            f"{_fmt(v['open_loop_psnr'])} / {_fmt(v['open_loop_ssim'], 3)} | "
            f"{_fmt(v['teacher_forced_copy_last_psnr'])} / {_fmt(v['open_loop_copy_last_psnr'])} | "
            f"{tf_gap:+.2f}{_pm(v.get('teacher_forced_gap_se_db'))} / {ol_gap:+.2f}{_pm(v.get('open_loop_gap_se_db'))} | "
            f"{_fmt(v.get('blurred_real_psnr'))} |"
        )
    energy = {h: v for h, v in r["fidelity"].items() if v.get("windows") and "teacher_forced_energy" in v}
    if energy:
        lines += ["", "Energy score of two draws from the same history (RMS distance, 0-1 range; lower is better; "
                  "a model that gives the same frame each time scores its RMS error, so a blur cannot pass for it):", "",
                  "| horizon | teacher-forced (spread) | open-loop (spread) | copy-last (tf / ol) | real blurred 2 px |",
                  "|---|---|---|---|---|"]
        for h, v in energy.items():
            lines.append(f"| {h} | {_fmt(v['teacher_forced_energy'], 4)} ({_fmt(v['teacher_forced_spread'], 4)}) | "
                         f"{_fmt(v['open_loop_energy'], 4)} ({_fmt(v['open_loop_spread'], 4)}) | "
                         f"{_fmt(v['teacher_forced_copy_last_energy'], 4)} / {_fmt(v['open_loop_copy_last_energy'], 4)} | "
                         f"{_fmt(v['blurred_real_energy'], 4)} |")
    ae = r["autoencoder"]
    lines += ["", f"Autoencoder reconstruction: PSNR {_fmt(ae['psnr'])} dB, SSIM {_fmt(ae['ssim'], 3)} ({ae['frames']} frames).", ""]
    hd = r["heads"]
    if hd.get("transitions"):
        lines += [f"Heads on {hd['transitions']} held-out transitions ({hd['terminal_transitions']} terminal): "
                  f"reward MAE {_fmt(hd['reward_mae'], 3)}, reward accuracy (|err|<0.5) {_fmt(hd['reward_accuracy'], 3)}, "
                  f"termination accuracy {_fmt(hd['termination_accuracy'], 3)}, recall {_fmt(hd['termination_recall'], 3)}, "
                  f"false-positive rate {_fmt(hd['termination_false_positive_rate'], 3)}, precision at the data's "
                  f"death rate ({_fmt(hd.get('death_rate'), 4)}) {_fmt(hd.get('termination_precision'), 3)}; "
                  f"the head's probability ranks deaths above other steps with AUC {_fmt(hd.get('termination_auc'), 3)} "
                  f"(mean {_fmt(hd.get('termination_probability_at_deaths'), 4)} at deaths, "
                  f"{_fmt(hd.get('termination_probability_elsewhere'), 4)} elsewhere)."
                  + ("".join(f" Modelled {k} after the step: mean absolute error {_fmt(v, 2)}."
                             for k, v in hd.get("state_mae", {}).items())), ""]
    lines += ["| batch | latency p50 (ms) | latency p99 (ms) | frames/s |", "|---|---|---|---|"]
    lines[-2] = "| batch | latency p50 (ms) | latency p99 (ms) | frames/s | mode |"
    lines[-1] = "|---|---|---|---|---|"
    for key, v in r["speed"].items():
        if key.startswith("batch_"):
            lines.append(f"| {v['batch_size']} | {v['latency_ms_p50']} | {v['latency_ms_p99']} | {v['frames_per_s']} | {v['mode']} |")
    ct = r.get("controllability")
    if ct and ct.get("transitions"):
        lines += ["", f"Controllability (inverse-dynamics probe, {ct['transitions']} held-out transitions): "
                  f"real accuracy {_fmt(ct['real']['mean'], 3)}, generated {_fmt(ct['generated']['mean'], 3)}, "
                  f"ratio {_fmt(ct['ratio']['mean'], 3)} (target >= 0.95); one-step realism (Fréchet) "
                  f"{_fmt(ct['one_step_realism_frechet'], 3)}.", "", "| action | real | generated | ratio |", "|---|---|---|---|"]
        for a, v in ct["real"]["per_action"].items():
            lines.append(f"| {a} | {_fmt(v, 3)} | {_fmt(ct['generated']['per_action'][a], 3)} | {_fmt(ct['ratio']['per_action'][a], 3)} |")
    st = r.get("stability")
    if st:
        lines += ["", f"Long rollout: {st['steps']} frames x {st['num_envs']} envs, {st['frames_per_minute']} frames per minute of game time.",
                  "", "| minute | pixel mean | pixel std | mean per-frame std | flat frames | non-finite | GPU MiB |", "|---|---|---|---|---|---|---|"]
        for i in range(len(st["minute_pixel_mean"])):
            mem = st["minute_gpu_memory_mib"][i] if i < len(st["minute_gpu_memory_mib"]) else ""
            lines.append(f"| {i + 1} | {st['minute_pixel_mean'][i]} | {st['minute_pixel_std'][i]} | {st['minute_frame_std_mean'][i]} | "
                         f"{st['minute_flat_frames'][i]} | {st['minute_nonfinite_rewards'][i]} | {mem} |")
        rz = st.get("realism")
        if rz:
            rel = rz.get("minute5_vs_minute1")
            verdict = "n/a (fewer than 5 minutes)" if rel is None else (
                f"{rel * 100:+.1f}% ({'met' if abs(rel) <= 0.10 else 'missed'}; target within 10%)")
            lines += ["", f"Realism per minute: Fréchet distance of probe-trunk features to {rz['reference_frames']} held-out real "
                      f"frames, all envs, about {rz['samples_per_minute'][0] if rz['samples_per_minute'] else 0} frames per "
                      f"minute (real-vs-real floor at that sample size: {_fmt(rz['real_floor'], 3)}; real frames blurred "
                      f"by a 2-px Gaussian: {_fmt(rz.get('blurred_real'), 3)}, the bar every minute must beat). "
                      f"Minute 5 vs minute 1: {verdict}.", "", *_minute_table(rz["per_minute"])]
            eng = rz.get("engine") or {}
            if eng.get("per_minute"):
                lines += ["", f"Against the real engine under the same held keys ({eng['reference_frames']} engine frames; "
                          f"engine-vs-engine floor {_fmt(eng['real_floor'], 3)}, engine frames blurred by 2 px "
                          f"{_fmt(eng['blurred_real'], 3)}; the engine's own distance to the held-out play above: "
                          f"{_fmt(eng['vs_heldout'], 3)}):", "", *_minute_table(eng["per_minute"])]
            elif eng.get("skipped"):
                lines += ["", f"Engine reference skipped: {eng['skipped']}"]
    return "\n".join(lines) + "\n"
