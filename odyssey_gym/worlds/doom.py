"""The real ViZDoom engine as a Gymnasium env, configured entirely by a `WorldSpec`.

Headless (no window), RGB24 frames, the spec's buttons / map / HUD / rewards / frame skip.
obs is uint8 (H, W, 3) at `spec.frame_size` (PIL bilinear resize when the engine renders
another size). `terminated` means the engine episode finished (death, scenario end, map exit);
`truncated` means we reached `spec.max_episode_steps` env steps (the cfg's own tic timeout is
disabled, so a timeout never hides as a termination).

When the engine episode finishes there is no new screen; the observation returned with
`terminated=True` repeats the last rendered frame (documented in docs/DATASET.md).
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from .spec import WorldSpec


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) -> uint8 (H, W, 3), PIL bilinear; no-op when already that size."""
    h, w = size
    if frame.shape[0] == h and frame.shape[1] == w:
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))


def check_action(space: gym.Space, action: Any, world: str) -> Any:
    """Return the action as the space's own type or raise a ValueError naming the world and space."""
    if isinstance(space, gym.spaces.Discrete):
        a = np.asarray(action)
        if a.shape == () and np.issubdtype(a.dtype, np.integer) and space.contains(a.astype(space.dtype)):
            return int(a)
    elif isinstance(space, gym.spaces.MultiBinary):
        a = np.asarray(action)
        if a.shape == space.shape and (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            a = a.astype(np.int8)
            if space.contains(a):
                return a
    elif space.contains(action):
        return action
    raise ValueError(f"world {world!r}: invalid action {action!r} for action space {space}")


class DoomEnv(gym.Env):
    """A ViZDoom world. `DoomEnv(get_world("doom-takecover"))`. `info["state"]` holds the world's
    `state_variables` (e.g. HEALTH) after every reset and step."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 35}

    def __init__(self, spec: WorldSpec, render_mode: str | None = "rgb_array"):
        if spec.engine != "vizdoom":
            raise ValueError(f"DoomEnv needs a vizdoom world, got {spec.name!r} (engine {spec.engine!r})")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.world = spec
        self.render_mode = render_mode
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": spec.fps}
        self.observation_space = spec.observation_space()
        self.action_space = spec.action_space()
        self._game = None
        self._frame: np.ndarray | None = None
        self._steps = 0
        self._done = True
        self.engine_seed: int | None = None

    # ---------------------------------------------------------------- engine
    def _make_game(self):
        import vizdoom as vzd

        spec = self.world
        game = vzd.DoomGame()
        game.load_config(os.path.join(vzd.scenarios_path, spec.scenario))
        if spec.doom_map is not None:
            game.set_doom_map(spec.doom_map)
        game.set_window_visible(False)
        game.set_mode(vzd.Mode.PLAYER)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_screen_resolution(getattr(vzd.ScreenResolution, spec.render_resolution))
        game.set_render_hud(spec.hud)
        game.set_render_messages(False)
        game.set_render_crosshair(False)
        game.set_depth_buffer_enabled(False)
        game.set_labels_buffer_enabled(False)
        game.set_automap_buffer_enabled(False)
        game.set_audio_buffer_enabled(False)
        game.set_sound_enabled(False)
        game.set_available_game_variables([getattr(vzd.GameVariable, v) for v in spec.state_variables])
        game.set_available_buttons([getattr(vzd.Button, b) for b in spec.buttons])
        game.set_episode_timeout(0)  # we truncate at spec.max_episode_steps ourselves
        if spec.living_reward is not None:
            game.set_living_reward(spec.living_reward)
        if spec.death_penalty is not None:
            game.set_death_penalty(spec.death_penalty)
        # ViZDoom makes ./_vizdoom/ at init with a check-then-create; engines starting together in a fresh
        # directory race on it and the loser dies ("Failed to create ./_vizdoom/ directory: File exists").
        os.makedirs("_vizdoom", exist_ok=True)
        game.init()
        return game

    def _grab(self) -> np.ndarray:
        state = self._game.get_state()
        if state is None:  # episode finished: no new screen, keep the last one
            return self._frame
        return _resize(state.screen_buffer, self.world.frame_size)

    def _state(self) -> np.ndarray:
        """The world's `state_variables` now, float32 (S,): read from the engine even after the episode ended,
        so the last frame of a death carries the health it died with."""
        import vizdoom as vzd

        return np.array([self._game.get_game_variable(getattr(vzd.GameVariable, v)) for v in self.world.state_variables],
                        np.float32)

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self._game is None:
            self._game = self._make_game()
        # the engine seed: the given seed itself (so datasets record it), else drawn from np_random
        self.engine_seed = int(seed) % (2**31) if seed is not None else int(self.np_random.integers(2**31))
        self._game.set_seed(self.engine_seed)
        self._game.new_episode()
        self._steps = 0
        self._done = False
        self._frame = None
        self._frame = self._grab()
        return self._frame.copy(), {"engine_seed": self.engine_seed, "state": self._state()}

    def step(self, action):
        if self._game is None or self._done:
            raise RuntimeError(f"world {self.world.name!r}: call reset() before step() (episode over or not started)")
        action = check_action(self.action_space, action, self.world.name)
        reward = float(self._game.make_action(self.world.action_to_buttons(action), self.world.frame_skip))
        self._steps += 1
        terminated = bool(self._game.is_episode_finished())
        truncated = (not terminated) and self._steps >= self.world.max_episode_steps
        self._frame = self._grab()
        self._done = terminated or truncated
        return self._frame.copy(), reward, terminated, truncated, {"state": self._state()}

    def render(self):
        if self.render_mode != "rgb_array" or self._frame is None:
            return None
        return self._frame.copy()

    def close(self):
        if self._game is not None:
            try:
                self._game.close()
            finally:
                self._game = None

    def __del__(self):  # engines are subprocess-like resources: never leak one
        try:
            self.close()
        except Exception:
            pass
