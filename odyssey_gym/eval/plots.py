"""The eval report's pictures (matplotlib, Agg): each returns False and draws nothing when its section is absent."""

from __future__ import annotations

import numpy as np


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_psnr(report: dict, path) -> bool:
    """PSNR against horizon, teacher-forced and open-loop, beside copy-last."""
    plt = _pyplot()
    if plt is None or not report.get("fidelity"):
        return False
    fid = {int(h): v for h, v in report["fidelity"].items() if v.get("windows")}
    hs = sorted(fid)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in [("teacher_forced_psnr", "teacher-forced"), ("open_loop_psnr", "open-loop"),
                       ("open_loop_copy_last_psnr", "copy-last (open-loop)")]:
        ax.plot(hs, [fid[h][key] for h in hs], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("horizon (steps)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{report['world']}: PSNR vs horizon")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_confusion(report: dict, path) -> bool:
    """The probe's confusion on real vs generated transitions (row-normalised).

    Discrete worlds: one K x K matrix each (rows: true action, columns: predicted). Multibinary worlds:
    one 2 x 2 matrix per button (rows: key up/down, columns: predicted up/down), real on top, generated below.
    """
    plt = _pyplot()
    ct = report.get("controllability")
    if plt is None or not ct or not ct.get("transitions"):
        return False
    names = list(ct["real"]["per_action"])
    ratio = ct["ratio"]["mean"]

    def heatmap(ax, counts):
        """Row-normalised counts as a blue matrix, each cell labelled with its value."""
        m = np.asarray(counts, dtype=np.float64)
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8, color="black" if v < 0.6 else "white")

    if isinstance(ct["real"]["confusion"], dict):  # multibinary: per button 2x2
        fig, axes = plt.subplots(2, len(names), figsize=(1.9 * len(names) + 0.5, 4.2), squeeze=False)
        for row, key in enumerate(("real", "generated")):
            for j, nm in enumerate(names):
                ax = axes[row, j]
                heatmap(ax, ct[key]["confusion"][nm])
                ax.set_xticks([0, 1], ["up", "down"], fontsize=7)
                ax.set_yticks([0, 1], ["up", "down"], fontsize=7)
                ax.set_title(f"{key[:3]}: {nm}\nacc {ct[key]['per_action'][nm]:.2f}", fontsize=7)
    else:
        fig, axes = plt.subplots(1, 2, figsize=(4 + 0.8 * len(names), 2.2 + 0.45 * len(names)), squeeze=False)
        for col, key in enumerate(("real", "generated")):
            ax = axes[0, col]
            heatmap(ax, ct[key]["confusion"])
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true action")
            ax.set_title(f"{key} transitions (mean recall {ct[key]['mean']:.2f})", fontsize=8)
    fig.suptitle(f"{report['world']}: inverse-dynamics probe, controllability ratio {ratio:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_realism(report: dict, path) -> bool:
    """Fréchet distance of each rollout minute to real frames, with the real-vs-real floor and the 10% band."""
    plt = _pyplot()
    rz = (report.get("stability") or {}).get("realism")
    if plt is None or not rz or not rz.get("per_minute"):
        return False
    per = [np.nan if v is None else v for v in rz["per_minute"]]
    minutes = np.arange(1, len(per) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(minutes, per, marker="o", label="rollout minute vs real")
    if per and not np.isnan(per[0]):
        ax.axhspan(per[0] * 0.9, per[0] * 1.1, color="tab:green", alpha=0.15, label="minute 1 +/- 10%")
    if rz.get("real_floor") is not None:
        ax.axhline(rz["real_floor"], color="gray", linestyle="--", label="real vs real (floor)")
    ax.set_xlabel("minute of game time")
    ax.set_ylabel("Fréchet distance (probe features)")
    ax.set_title(f"{report['world']}: realism over a long rollout")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
