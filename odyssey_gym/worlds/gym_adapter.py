"""Any Gymnasium env with RGB frames as a world: `get_world("gym:CartPole-v1")`.

The frame is the env's observation when that is an (H, W, 3) uint8 image, else `render()`
(the env is made with render_mode="rgb_array"); frames are resized to the world's frame size
(default 64x64, PIL bilinear). The action space is the env's own: Discrete -> a discrete world,
MultiBinary -> a multibinary world. Other action spaces (Box, ...) are not supported yet.
"""

from __future__ import annotations

from functools import lru_cache

import gymnasium as gym
import numpy as np

from .doom import _resize, check_action
from .spec import WorldSpec

DEFAULT_FRAME_SIZE = (64, 64)


def _is_image_space(space) -> bool:
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and space.shape[-1] == 3)


@lru_cache(maxsize=None)
def gym_world_spec(env_id: str, frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE) -> WorldSpec:
    """The WorldSpec of a Gymnasium env (made once to read its action space and time limit)."""
    try:
        env = gym.make(env_id, render_mode="rgb_array")
    except gym.error.Error as e:
        raise KeyError(f"unknown world 'gym:{env_id}': gymnasium cannot make {env_id!r} ({e})") from e
    try:
        space = env.action_space
        max_steps = env.spec.max_episode_steps if env.spec is not None and env.spec.max_episode_steps else 1000
    finally:
        env.close()
    if isinstance(space, gym.spaces.Discrete):
        n = int(space.n)
        buttons = tuple(f"ACTION_{i}" for i in range(n))
        kind, discrete = "discrete", tuple(tuple(int(i == j) for j in range(n)) for i in range(n))
        if int(space.start) != 0:
            raise NotImplementedError(f"gym:{env_id}: Discrete action spaces with start != 0 are not supported ({space})")
    elif isinstance(space, gym.spaces.MultiBinary) and len(space.shape) == 1:
        buttons = tuple(f"BUTTON_{i}" for i in range(space.shape[0]))
        kind, discrete = "multibinary", ()
    else:
        raise NotImplementedError(
            f"gym:{env_id}: action space {space} is not supported; worlds need Discrete or MultiBinary actions "
            f"(discretize a {type(space).__name__} space with a gymnasium ActionWrapper first)")
    return WorldSpec(
        name=f"gym:{env_id}", version=1, env_id=f"odyssey_gym/gym-{env_id}", engine="gymnasium", scenario=env_id,
        doom_map=None, buttons=buttons, action_kind=kind, discrete_actions=discrete,
        frame_size=tuple(frame_size), render_resolution="", frame_skip=1, max_episode_steps=int(max_steps),
        description=f"Gymnasium {env_id} seen through its RGB frames",
    )


class GymFramesEnv(gym.Env):
    """A Gymnasium env seen through uint8 RGB frames at the world's frame size."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, spec: WorldSpec | str, render_mode: str | None = "rgb_array", **make_kwargs):
        if isinstance(spec, str):
            spec = gym_world_spec(spec[4:] if spec.startswith("gym:") else spec)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.world = spec
        self.render_mode = render_mode
        self.inner = gym.make(spec.scenario, render_mode="rgb_array", **make_kwargs)
        self._obs_is_frame = _is_image_space(self.inner.observation_space)
        fps = self.inner.metadata.get("render_fps") or spec.fps
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": fps}
        self.observation_space = spec.observation_space()
        self.action_space = spec.action_space()
        self._frame: np.ndarray | None = None
        self._steps = 0

    def _frame_of(self, obs) -> np.ndarray:
        frame = obs if self._obs_is_frame else self.inner.render()
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise RuntimeError(f"{self.world.scenario}: expected an RGB uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
        return _resize(np.ascontiguousarray(frame), self.world.frame_size)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.inner.reset(seed=seed, options=options)
        self._steps = 0
        self._frame = self._frame_of(obs)
        return self._frame.copy(), info

    def step(self, action):
        action = check_action(self.action_space, action, self.world.name)
        obs, reward, terminated, truncated, info = self.inner.step(action)
        self._steps += 1
        truncated = bool(truncated) or (not terminated and self._steps >= self.world.max_episode_steps)
        self._frame = self._frame_of(obs)
        return self._frame.copy(), float(reward), bool(terminated), truncated, info

    def render(self):
        if self.render_mode != "rgb_array" or self._frame is None:
            return None
        return self._frame.copy()

    def close(self):
        if getattr(self, "inner", None) is not None:
            self.inner.close()
            self.inner = None
