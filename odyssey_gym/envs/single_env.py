"""`WorldModelEnv`: the single-env numpy view of `WorldModelVectorEnv` (num_envs=1, autoreset off).

This is what `gym.make("odyssey_gym/DoomExplore-v0")` returns: a plain `gymnasium.Env` that
passes both env checkers and works with `gymnasium.utils.play` (`get_keys_to_action`).
"""

from __future__ import annotations

import numpy as np
from gymnasium import Env
from gymnasium.vector import AutoresetMode

from odyssey_gym.worlds import WorldSpec, get_world

__all__ = ["WorldModelEnv", "key_name_to_code"]


def key_name_to_code(name: str) -> int:
    """pygame key name ("w", "left", "space") -> pygame key code."""
    import warnings

    import pygame

    try:
        with warnings.catch_warnings():  # "pygame.init() has not been called": the name table needs no init
            warnings.simplefilter("ignore")
            return pygame.key.key_code(name)
    except ValueError:
        raise ValueError(f"unknown key name {name!r} in the world's key map (pygame.key.key_code rejects it)") from None


class WorldModelEnv(Env):
    """One world-model env on the host (numpy in, numpy out).

    Same arguments as `WorldModelVectorEnv` minus `num_envs`, `backend` and `autoreset_mode`.
    `reset(options={"context": frames (K,H,W,3) uint8, "actions": ...})` starts from given frames.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 35}

    def __init__(
        self,
        world: str | WorldSpec = "doom-explore",
        device="cpu",
        weights=None,
        max_episode_steps: int | None = None,
        render_mode: str | None = "rgb_array",
        sampling_steps: int | None = None,
        compile: bool = False,
        start_bank=None,
        detail_carry: float | None = None,
    ):
        from .vector_env import WorldModelVectorEnv

        self.world = get_world(world)
        self.vector_env = WorldModelVectorEnv(
            self.world,
            num_envs=1,
            device=device,
            weights=weights,
            autoreset_mode=AutoresetMode.DISABLED,
            max_episode_steps=max_episode_steps,
            backend="numpy",
            render_mode=render_mode,
            sampling_steps=sampling_steps,
            compile=compile,
            start_bank=start_bank,
            detail_carry=detail_carry,
        )
        self.render_mode = render_mode
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": self.vector_env.metadata["render_fps"]}
        self.observation_space = self.vector_env.single_observation_space
        self.action_space = self.vector_env.single_action_space
        self._last_obs: np.ndarray | None = None

    @property
    def max_episode_steps(self) -> int:
        return self.vector_env.max_episode_steps

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        if "reset_mask" in options:
            raise ValueError("reset_mask is a vector-env option; the single env always resets itself")
        if "context" in options:
            ctx = np.asarray(options["context"])
            if ctx.ndim == 4:
                options["context"] = ctx[None]
            if "actions" in options and options["actions"] is not None:
                act = np.asarray(options["actions"])
                options["actions"] = act[None]
            if options.get("state") is not None:
                options["state"] = np.asarray(options["state"], np.float32)[None]
        obs, info = self.vector_env.reset(seed=seed, options=options or None)
        self._last_obs = obs[0]
        return obs[0], self._one_info(info)

    @staticmethod
    def _one_info(info: dict) -> dict:
        """The vector env's info for env 0: its game state as (S,) (models with state)."""
        return {"state": np.asarray(info["state"])[0]} if "state" in info else {}

    def step(self, action):
        a = np.asarray(action)
        expected = self.world.action_shape
        if a.shape != expected:
            raise ValueError(f"expected an action of shape {expected} in {self.action_space}, got shape {a.shape}: {action!r}")
        obs, rew, term, trunc, info = self.vector_env.step(a[None])
        self._last_obs = obs[0]
        return obs[0], float(rew[0]), bool(term[0]), bool(trunc[0]), self._one_info(info)

    def render(self):
        if self.render_mode is None:
            return None
        return self.vector_env.render()[0]

    def get_keys_to_action(self) -> dict[tuple[int, ...], object]:
        """Key-code combination -> action, for `gymnasium.utils.play`."""
        table = {}
        for names, action in self.world.keys_to_action().items():
            codes = tuple(sorted(key_name_to_code(n) for n in names))
            table[codes] = action
        return table

    def noop_action(self):
        return self.world.noop_action()

    def close(self):
        self.vector_env.close()
