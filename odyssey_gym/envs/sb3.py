"""`OdysseyVecEnv`: a Stable-Baselines3 `VecEnv` over `WorldModelVectorEnv` (no per-env Python envs).

SB3 wants SAME_STEP autoreset with the last observation in `infos[i]["terminal_observation"]`
and `infos[i]["TimeLimit.truncated"]`; this adapter runs the vector env in SAME_STEP mode,
numpy backend, and translates the batched info dict into SB3's list of dicts.

    venv = VecMonitor(OdysseyVecEnv("doom-takecover", num_envs=16, device="cuda"))
    PPO("CnnPolicy", venv).learn(100_000)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from .vector_env import WorldModelVectorEnv

__all__ = ["OdysseyVecEnv"]


class OdysseyVecEnv(VecEnv):
    """SB3 VecEnv adapter.

    Args:
        env: a world name (then `**kwargs` go to `WorldModelVectorEnv`, e.g. `num_envs`, `device`,
            `weights`) or an existing `WorldModelVectorEnv` built with `autoreset_mode=SAME_STEP`
            and `backend="numpy"`.
    """

    def __init__(self, env: str | WorldModelVectorEnv = "doom-takecover", **kwargs: Any):
        if isinstance(env, WorldModelVectorEnv):
            if kwargs:
                raise TypeError(f"kwargs {sorted(kwargs)} are only accepted when building the env from a world name")
            if env.autoreset_mode != AutoresetMode.SAME_STEP or env.backend != "numpy":
                raise ValueError(
                    "OdysseyVecEnv needs a WorldModelVectorEnv with autoreset_mode=SAME_STEP and backend='numpy' "
                    f"(got {env.autoreset_mode.value}, {env.backend!r}); or pass the world name and let it build one"
                )
            venv = env
        else:
            for bad in ("autoreset_mode", "backend"):
                if bad in kwargs:
                    raise TypeError(f"OdysseyVecEnv sets {bad} itself (SAME_STEP, numpy)")
            venv = WorldModelVectorEnv(env, autoreset_mode=AutoresetMode.SAME_STEP, backend="numpy", **kwargs)
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": venv.metadata["render_fps"]}

    # -------------------------------------------------------------- core
    def reset(self):
        seeds, options = self._seeds, self._options
        seed: int | list | None
        if all(s is None for s in seeds):
            seed = None
        elif all(s is not None for s in seeds) and all(s == seeds[0] + i for i, s in enumerate(seeds)):
            seed = int(seeds[0])
        else:
            seed = list(seeds)
        opts = options[0] if options and all(o == options[0] for o in options) else None
        if opts is None and any(options):
            raise ValueError("OdysseyVecEnv: per-env reset options that differ between envs are not supported")
        obs, _ = self.venv.reset(seed=seed, options=dict(opts) if opts else None)
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        actions, self._actions = self._actions, None
        obs, rew, term, trunc, info = self.venv.step(np.asarray(actions))
        dones = term | trunc
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final_obs = info["final_obs"]
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = final_obs[i]
                infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
        return obs, rew.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.venv.render())

    # -------------------------------------------------------------- attribute plumbing
    def _n(self, indices: VecEnvIndices) -> int:
        return len(list(self._get_indices(indices)))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """All envs share one batched env, so an attribute is the same for every index."""
        if attr_name == "render_mode":
            value = self.venv.render_mode
        else:
            value = getattr(self.venv, attr_name)
        return [value] * self._n(indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        n = self._n(indices)
        if n != self.num_envs:
            raise ValueError("OdysseyVecEnv: attributes are shared by the batch; set_attr must target all envs")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        idx = list(self._get_indices(indices))
        if method_name == "render":
            frames = self.venv.render()
            return [frames[i] for i in idx]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result] * len(idx)

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return [False] * self._n(indices)

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Env i gets `seed + i` at the next reset (SB3 semantics)."""
        return super().seed(seed)


def make_sb3_env(world: str, source: str = "imagination", num_envs: int = 16, seed: int = 0, frame_stack: int = 4,
                 device: str = "auto", weights: str | None = None, subprocess: bool | None = None):
    """The same SB3 stack over the world model or the real engine, so a policy moves between them unchanged.

    source "imagination": `OdysseyVecEnv` (one batched GPU step, starts from real contexts of the start bank);
    "real": the ViZDoom engine, one process per env (`SubprocVecEnv`; in-process when `subprocess` is False,
    default: in-process for a single env). Both are wrapped as VecMonitor (episode score = summed reward in
    the world's units, e.g. tics survived) then VecFrameStack(frame_stack) on the channel axis.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecMonitor

    if source not in ("imagination", "real"):
        raise ValueError(f"source must be 'imagination' or 'real', got {source!r}")
    if num_envs < 1 or frame_stack < 1:
        raise ValueError(f"num_envs and frame_stack must be >= 1 (got {num_envs}, {frame_stack})")
    if source == "imagination":
        venv = OdysseyVecEnv(world, num_envs=num_envs, device=device, weights=weights)
    else:
        from odyssey_gym.worlds import get_world, make_real_env

        spec = get_world(world)  # fail here, with the known worlds, not inside a worker process
        fns = [lambda: make_real_env(spec) for _ in range(num_envs)]
        sub = num_envs > 1 if subprocess is None else subprocess
        venv = SubprocVecEnv(fns, start_method="forkserver") if sub else DummyVecEnv(fns)
    venv.seed(seed)
    venv = VecMonitor(venv)
    return VecFrameStack(venv, n_stack=frame_stack, channels_order="last") if frame_stack > 1 else venv
