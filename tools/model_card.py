"""Write odyssey_gym/weights/<world>/MODEL_CARD.md from train_summary.json and an `odyssey-gym eval` report.json.

Usage: python tools/model_card.py WORLD REPORT_JSON [--gpu "NVIDIA H100 80GB HBM3"]
Every number in the card comes from those two files; targets are checked, and a miss is said plainly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from odyssey_gym.eval.cli import render_markdown

ROOT = Path(__file__).resolve().parent.parent


def _seed_summary(seeds: list[int]) -> str:
    if not seeds:
        return "none recorded"
    return f"{len(seeds)} episode seeds (min {min(seeds)}, max {max(seeds)}; all listed in train_summary.json)"


def verdicts(r: dict) -> list[str]:
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
    st = r.get("stability")
    if st:
        nan = sum(st["minute_nonfinite_rewards"])
        flat = sum(st["minute_flat_frames"])
        mem = st["minute_gpu_memory_mib"]
        flat_mem = (max(mem) - min(mem)) if mem else 0.0
        out.append(f"- {st['steps']}-frame rollout: non-finite outputs {nan}, flat frames {flat}, "
                   f"GPU memory spread across minutes {flat_mem:.1f} MiB.")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("world")
    ap.add_argument("report")
    ap.add_argument("--gpu", default=None)
    ap.add_argument("--notes", default="", help="a paragraph on what limits the numbers")
    ap.add_argument("--commit", default=None, help="the commit that trained (when the GPU copy had no .git)")
    ap.add_argument("--reproduce", default="", help="markdown: the commands that made the data, weights and report")
    a = ap.parse_args()
    wdir = ROOT / "odyssey_gym" / "weights" / a.world
    summary = json.loads((wdir / "train_summary.json").read_text())
    config = json.loads((wdir / "config.json").read_text())
    report = json.loads(Path(a.report).read_text())
    d = config["dynamics"]
    ae = config["ae"]
    lines = [
        f"# Model card: {a.world}",
        "",
        "An action-conditioned next-frame model of the real ViZDoom world, trained by this repo's own code "
        "(`odyssey-gym collect` then `odyssey-gym train`); load it with `odyssey_gym.model.load(\"%s\")` or "
        "`gym.make_vec(...)`." % a.world,
        "",
        "## Model",
        f"- Autoencoder: {ae['frame_size'][0]}x{ae['frame_size'][1]} RGB -> {ae['latent_channels']}x"
        f"{d['latent_size'][0]}x{d['latent_size'][1]} latent ({ae['downsample']}x downsampling).",
        f"- Dynamics: frame-causal transformer, {d['n_layer']} layers, width {d['n_embd']}, {d['n_head']} heads, "
        f"patch {d['patch_size']} ({(d['latent_size'][0] // d['patch_size']) * (d['latent_size'][1] // d['patch_size'])} tokens/frame), "
        f"context {d['context_frames']} frames (ring-buffer KV cache), {config['sampling_steps']} sampling steps, "
        "x0-prediction diffusion forcing, reward and termination heads.",
        f"- Weights: bf16 safetensors, model version {config.get('model_version')}.",
        "",
        "## Data and training",
        f"- World `{summary['world']}` v{summary['world_version']}: {summary['data']['frames']} frames, "
        f"{summary['data']['episodes']} episodes, {_seed_summary(summary['data']['seeds'])}.",
        f"- Steps: autoencoder {summary['steps']['ae']}, dynamics {summary['steps']['dyn']}; "
        f"{summary['gpu_minutes']} GPU-minutes on {a.gpu or 'the GPU'}" + (
            f"; initialised from {summary['init_from']['weights']} ({summary['init_from']['ae_steps']} autoencoder + "
            f"{summary['init_from']['dyn_steps']} dynamics steps, {summary['init_from']['gpu_minutes']} GPU-minutes, "
            f"commit {summary['init_from']['commit']})." if summary.get("init_from") else "."),
        f"- Code: commit {a.commit or summary.get('git_commit')}.",
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
    if a.reproduce:
        lines += ["## Reproduce", "", a.reproduce, ""]
    if a.notes:
        lines += ["## What limits these numbers", "", a.notes, ""]
    (wdir / "MODEL_CARD.md").write_text("\n".join(lines))
    print(f"wrote {wdir / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
