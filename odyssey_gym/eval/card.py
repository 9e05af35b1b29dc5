"""`odyssey-gym card`: a weights folder's MODEL_CARD.md from its train_summary.json and an `odyssey-gym eval` report.

    odyssey-gym card --world doom-takecover --report reports/doom-takecover/report.json --gpu "NVIDIA H100 80GB HBM3"

Every number in the card comes from config.json, the campaign log and the report; each target is checked, and a
miss is said plainly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..train.campaign import load_summary
from .cli import render_markdown


def add_arguments(p) -> None:
    p.add_argument("--world", required=True, help="world name, e.g. doom-takecover")
    p.add_argument("--report", required=True, help="report.json written by `odyssey-gym eval`")
    p.add_argument("--weights", default=None, help="weights dir (default: the shipped weights of the world)")
    p.add_argument("--out", default=None, help="where to write the card (default: WEIGHTS/MODEL_CARD.md)")
    p.add_argument("--gpu", default=None, help="the GPU that trained, when the campaign log does not name it")
    p.add_argument("--notes", default="", help="a paragraph on what limits the numbers")
    p.add_argument("--commit", default=None, help="the commit that trained (default: the last leg's git_commit)")
    p.add_argument("--reproduce", default="", help="markdown: the commands that made the data, weights and report")


def _seed_summary(seeds: list[int]) -> str:
    if not seeds:
        return "none recorded"
    return f"{len(seeds)} episode seeds (min {min(seeds)}, max {max(seeds)}; all listed in train_summary.json)"


def verdicts(r: dict) -> list[str]:
    """One line per target the report measured: the number, then met or missed."""
    out = []
    f1 = r["fidelity"].get("1", {})
    if f1.get("windows"):
        v = f1["teacher_forced_psnr"]
        out.append(f"- 1-step PSNR >= 32 dB (GameNGen 29.4): **{v:.2f} dB, {'met' if v >= 32 else 'missed'}**.")
    f16 = r["fidelity"].get("16", {})
    if f16.get("windows"):
        gap = f16["open_loop_psnr"] - f16["open_loop_copy_last_psnr"]
        out.append(f"- Open-loop at 16 steps >= copy-last + 6 dB: **{gap:+.2f} dB over copy-last, {'met' if gap >= 6 else 'missed'}**.")
    sp = r.get("speed", {}).get("batch_1")
    if sp:
        out.append(f"- Latency at batch 1 <= 5 ms (Odyssey: 40 ms): **p50 {sp['latency_ms_p50']} ms, p99 {sp['latency_ms_p99']} ms "
                   f"({sp['mode']}), {'met' if sp['latency_ms_p50'] <= 5 else 'missed'}**.")
    ct = r.get("controllability")
    if ct and ct.get("transitions"):
        v = ct["ratio"]["mean"]
        out.append(f"- Controllability ratio >= 0.95 (probe accuracy on generated / real transitions): **{v:.3f}, "
                   f"{'met' if v >= 0.95 else 'missed'}**.")
    rz = (r.get("stability") or {}).get("realism") or {}
    if rz.get("minute5_vs_minute1") is not None:
        v = rz["minute5_vs_minute1"]
        out.append(f"- Realism at minute 5 within 10% of minute 1: **{v * 100:+.1f}%, {'met' if abs(v) <= 0.10 else 'missed'}**.")
    eng = rz.get("engine") or {}
    if eng.get("per_minute") and len(eng["per_minute"]) >= 5 and None not in eng["per_minute"][:5]:
        m1, m5, bar = eng["per_minute"][0], eng["per_minute"][4], eng["blurred_real"]
        met = m1 < bar and m5 < bar
        out.append(f"- Realism better than blurred real frames at minutes 1 and 5, against the real engine under the "
                   f"same held keys: **{m1:.3f} / {m5:.3f} against {bar:.3f}, {'met' if met else 'missed'}** (the "
                   f"engine's own frames sit {eng['vs_heldout']:.3f} from the held-out play).")
    st = r.get("stability")
    if st:
        nan = sum(st["minute_nonfinite_rewards"])
        flat = sum(st["minute_flat_frames"])
        mem = st["minute_gpu_memory_mib"]
        flat_mem = (max(mem) - min(mem)) if mem else 0.0
        out.append(f"- {st['steps']}-frame rollout: non-finite outputs {nan}, flat frames {flat}, "
                   f"GPU memory spread across minutes {flat_mem:.1f} MiB.")
    return out


def _leg_line(leg: dict, gpu: str | None) -> str:
    data = leg.get("data") or {}
    steps = leg.get("steps") or {}
    names = ", ".join(d["name"] for d in data.get("datasets") or [] if d.get("name"))
    line = (f"- Leg {leg.get('leg', 1)}: autoencoder {steps.get('ae', 0)}, dynamics {steps.get('dyn', 0)} steps; "
            f"{leg.get('gpu_minutes', 0)} GPU-minutes on {leg.get('gpu') or gpu or 'the GPU'}; "
            f"data {data.get('frames', '?')} frames, {data.get('episodes', '?')} episodes" + (f" ({names})" if names else ""))
    init = leg.get("init_from")
    if isinstance(init, dict):
        line += (f"; initialised from {init.get('weights')} ({init.get('ae_steps')} autoencoder + {init.get('dyn_steps')} "
                 f"dynamics steps, {init.get('gpu_minutes')} GPU-minutes, commit {init.get('commit')})")
    elif init:
        line += f"; initialised from {init}"
    return line + "."


def render_card(world: str, config: dict, summary: dict, report: dict, gpu: str | None = None, commit: str | None = None,
                reproduce: str = "", notes: str = "") -> str:
    """The card's markdown; `summary` is a campaign log as `load_summary` returns it."""
    d, ae = config["dynamics"], config["ae"]
    legs, totals = summary["legs"], summary["totals"]
    tokens = (d["latent_size"][0] // d["patch_size"]) * (d["latent_size"][1] // d["patch_size"])
    commit = commit or (legs[-1].get("git_commit") if legs else None) or "unknown"
    lines = [
        f"# Model card: {world}",
        "",
        "An action-conditioned next-frame model of the real ViZDoom world, trained by this repo's own code "
        f"(`odyssey-gym collect` then `odyssey-gym train`); load it with `odyssey_gym.model.load(\"{world}\")` or "
        "`gym.make_vec(...)`.",
        "",
        "## Model",
        f"- Autoencoder: {ae['frame_size'][0]}x{ae['frame_size'][1]} RGB -> {ae['latent_channels']}x"
        f"{d['latent_size'][0]}x{d['latent_size'][1]} latent ({ae['downsample']}x downsampling).",
        f"- Dynamics: frame-causal transformer, {d['n_layer']} layers, width {d['n_embd']}, {d['n_head']} heads, "
        f"patch {d['patch_size']} ({tokens} tokens/frame), context {d['context_frames']} frames (ring-buffer KV cache), "
        f"{config['sampling_steps']} sampling steps, x0-prediction diffusion forcing, reward and termination heads.",
        f"- Weights: bf16 safetensors, model version {config.get('model_version')}.",
        "",
        "## Data and training",
        f"- World `{summary['world']}` v{summary['world_version']}: trained on {_seed_summary(summary['data']['seeds'])}.",
        *(_leg_line(leg, gpu) for leg in legs),
        f"- In all: {totals['legs']} leg{'' if totals['legs'] == 1 else 's'}, autoencoder {totals['steps']['ae']} and dynamics {totals['steps']['dyn']} steps, "
        f"{totals['gpu_minutes']} GPU-minutes.",
        f"- Code: commit {commit}.",
        f"- Held-out evaluation data: {report['data']['frames']} frames, {report['data']['episodes']} episodes, seeds "
        f"{', '.join(map(str, report['data']['seeds'][:8]))}{' ...' if len(report['data']['seeds']) > 8 else ''} "
        "(recorded with a base seed the training data never used; disjoint from the training seeds).",
        "",
        "## Targets",
        *verdicts(report),
        "",
        "## Measured (`odyssey-gym eval`)",
        "",
        render_markdown(report),
        "![PSNR vs horizon](psnr_vs_horizon.png) ![controllability](controllability_confusion.png) "
        "![realism by minute](realism_vs_minute.png)",
        "",
        "Real (top) vs generated open-loop (bottom): ![strip](strip.png)",
        "",
    ]
    pr = report.get("probe")
    if pr:
        lines += [f"The probe (`probe/`, trained by `odyssey-gym train-probe` on {pr.get('data_frames')} real frames of "
                  f"{pr.get('data_episodes')} episodes whose seeds the world model never saw; {pr['trained_steps']} steps) "
                  f"scores {pr.get('val_mean_accuracy')} on held-out real transitions (chance {pr.get('val_chance')}).", ""]
    if reproduce:
        lines += ["## Reproduce", "", reproduce, ""]
    if notes:
        lines += ["## What limits these numbers", "", notes, ""]
    return "\n".join(lines)


def run(args) -> int:
    from ..model import weights_dir
    from ..worlds import get_world

    world = get_world(args.world).name
    wdir = Path(args.weights) if args.weights else weights_dir(world)
    try:
        config = json.loads((wdir / "config.json").read_text())
        summary = load_summary(wdir)
        report = json.loads(Path(args.report).read_text())
    except (OSError, ValueError) as e:
        print(f"odyssey-gym card: {e}", file=sys.stderr)
        return 2
    if summary is None:
        print(f"odyssey-gym card: no train_summary.json in {wdir}", file=sys.stderr)
        return 2
    if config.get("world") != world or report.get("world") != world:
        print(f"odyssey-gym card: the weights are for {config.get('world')!r} and the report for "
              f"{report.get('world')!r}, not {world!r}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else wdir / "MODEL_CARD.md"
    out.write_text(render_card(world, config, summary, report, gpu=args.gpu, commit=args.commit,
                               reproduce=args.reproduce, notes=args.notes))
    print(f"wrote {out}")
    return 0
