"""Minari 0.5 import/export. Observations are the frames (uint8 H x W x 3), stored losslessly
(`jpeg_encoding=False`); actions, rewards, terminations, truncations, episode seeds and the game state
(`infos["state"]`, one row per observation) round-trip exactly.

Datasets live under the Minari root (`MINARI_DATASETS_PATH`, else ~/.minari/datasets); `path=`
overrides the root for one call.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from .dataset import Dataset, DatasetError, DatasetWriter, Episode, MultiDataset


@contextlib.contextmanager
def _minari_root(path):
    if path is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def export_minari(dataset: Dataset | MultiDataset | str, dataset_id: str, path=None, author: str | None = None,
                  description: str | None = None) -> Path:
    """Write every episode of `dataset` as the Minari dataset `dataset_id` (e.g. "odyssey/doom-takecover/random-v0").

    Returns the Minari dataset directory."""
    import minari
    from minari.data_collector import EpisodeBuffer

    if isinstance(dataset, (str, os.PathLike)):
        dataset = Dataset(dataset)
    spec = dataset.spec
    buffers = []
    for i in range(len(dataset)):
        ep = dataset.load_episode(i)
        buffers.append(EpisodeBuffer(
            id=i, seed=None if ep.seed is None else int(ep.seed), observations=ep.frames, actions=np.asarray(ep.actions),
            rewards=list(np.asarray(ep.rewards, np.float64)), terminations=list(map(bool, ep.terminations)),
            truncations=list(map(bool, ep.truncations)),
            infos={} if ep.state is None else {"state": np.asarray(ep.state, np.float32)},  # (L+1, S), as observations
        ))
    import warnings

    with _minari_root(path), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"minari\.")
        minari.create_dataset_from_buffers(
            dataset_id, buffers, env=None, observation_space=spec.observation_space(), action_space=spec.action_space(),
            algorithm_name="odyssey-gym collect", author=author,
            description=description or f"odyssey-gym world {spec.name} v{spec.version}: frames as uint8 observations",
            jpeg_encoding=False,
        )
        from minari.storage import get_dataset_path

        return Path(get_dataset_path(dataset_id))


def _load_minari(dataset_id_or_path, path=None):
    import minari

    p = Path(str(dataset_id_or_path))
    if p.is_dir():  # a Minari dataset directory (holding data/) or its data/ folder
        data = p / "data" if (p / "data").is_dir() else p
        return minari.MinariDataset(str(data))
    with _minari_root(path):
        return minari.load_dataset(str(dataset_id_or_path))


def _episodes(mds, spec, name):
    """The Minari dataset's episodes as our Episodes, each checked against the world's frame and action shapes."""
    for ep in mds.iterate_episodes():
        frames = np.asarray(ep.observations)
        if frames.dtype != np.uint8 or tuple(frames.shape[1:]) != spec.frame_shape:
            raise DatasetError(f"Minari {name}: episode {ep.id} observations {frames.dtype} {frames.shape[1:]} "
                               f"are not frames of world {spec.name!r} {spec.frame_shape}")
        seed = None
        try:
            seed = mds.storage.get_episode_metadata([ep.id])
            seed = next(iter(seed)).get("seed")
        except Exception:
            seed = None
        actions = np.asarray(ep.actions)
        if spec.action_kind == "multibinary":
            actions = actions.astype(spec.action_dtype)
        state = (getattr(ep, "infos", None) or {}).get("state")
        yield Episode(frames=frames, actions=actions, rewards=np.asarray(ep.rewards, np.float32),
                      terminations=np.asarray(ep.terminations, bool), truncations=np.asarray(ep.truncations, bool),
                      seed=None if seed is None else int(seed),
                      state=None if state is None else np.asarray(state, np.float32))


def import_minari(dataset_id_or_path, out_dir, world, path=None, chunk_frames: int | None = None) -> Dataset:
    """Append every episode of a Minari dataset (id, or its directory) to the dataset dir `out_dir` of `world`.

    Observations must be uint8 frames of the world's frame shape, actions of its action shape."""
    return import_minari_split(dataset_id_or_path, {"all": out_dir}, world, lambda i: "all", path=path,
                               chunk_frames=chunk_frames)["all"]


def import_minari_split(dataset_id_or_path, out_dirs: dict, world, split, path=None,
                        chunk_frames: int | None = None) -> dict[str, Dataset]:
    """Append each episode of a Minari dataset to `out_dirs[split(i)]`, i its position in the dataset: one read
    of the dataset fills, say, disjoint training and held-out sets. Every dir in `out_dirs` must get an episode."""
    from ..worlds import get_world

    spec = get_world(world)
    mds = _load_minari(dataset_id_or_path, path)
    kw = {} if chunk_frames is None else {"chunk_frames": chunk_frames}
    writers = {k: DatasetWriter(v, spec, **kw) for k, v in out_dirs.items()}
    counts = dict.fromkeys(out_dirs, 0)
    try:
        for i, ep in enumerate(_episodes(mds, spec, dataset_id_or_path)):
            k = split(i)
            writers[k].add_episode(ep, source=f"minari:{dataset_id_or_path}")
            counts[k] += 1
    finally:
        for w in writers.values():
            w.close()
    empty = [k for k, n in counts.items() if n == 0]
    if empty:
        raise DatasetError(f"Minari {dataset_id_or_path}: {sum(counts.values())} episodes leave {', '.join(empty)} "
                           f"without any")
    return {k: Dataset(v) for k, v in out_dirs.items()}
