"""A world is a named, versioned description of a real engine setup.

The same spec drives recording (the real engine), the world model (frame size, action
vector) and the envs (spaces, key map, fps). It imports neither torch nor the engine,
so every layer can read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


# What a keyboard player holds at once (button names, weight): mostly walking forward, turning while walking, turns
# on the spot, strafes, backing off, circle-strafes and standing, never opposite keys together. The weights are a
# person's habits, which a key map cannot say, so they are a table; a world uses the entries whose buttons it has
# (by name, so any button order works).
KEYBOARD_HOLDS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("MOVE_FORWARD",), 6.0),
    (("MOVE_FORWARD", "TURN_LEFT"), 3.0),
    (("MOVE_FORWARD", "TURN_RIGHT"), 3.0),
    (("TURN_LEFT",), 2.0),
    (("TURN_RIGHT",), 2.0),
    (("MOVE_LEFT",), 1.0),
    (("MOVE_RIGHT",), 1.0),
    (("MOVE_FORWARD", "MOVE_LEFT"), 1.0),
    (("MOVE_FORWARD", "MOVE_RIGHT"), 1.0),
    (("MOVE_BACKWARD",), 1.0),
    (("MOVE_BACKWARD", "TURN_LEFT"), 0.5),
    (("MOVE_BACKWARD", "TURN_RIGHT"), 0.5),
    (("MOVE_LEFT", "TURN_RIGHT"), 0.5),  # circle-strafe
    (("MOVE_RIGHT", "TURN_LEFT"), 0.5),
    ((), 1.0),
)


@dataclass(frozen=True)
class WorldSpec:
    name: str  # "doom-explore"
    version: int  # bump when anything that changes recorded frames/actions changes
    env_id: str  # gymnasium id of the world-model env, e.g. "odyssey_gym/DoomExplore-v0"
    engine: Literal["vizdoom", "gymnasium"]
    scenario: str  # vizdoom: a .cfg in vizdoom.scenarios_path; gymnasium: an env id
    doom_map: str | None  # vizdoom map name ("MAP01"), None to keep the cfg's
    buttons: tuple[str, ...]  # vizdoom Button names, in action-vector order
    action_kind: Literal["multibinary", "discrete"]
    # discrete worlds: each action is a tuple of 0/1 per button (button combo)
    discrete_actions: tuple[tuple[int, ...], ...] = ()
    frame_size: tuple[int, int] = (120, 160)  # (H, W) of the frames we record and model
    render_resolution: str = "RES_160X120"  # engine resolution before any resize
    frame_skip: int = 1
    max_episode_steps: int = 2100
    hud: bool = False
    living_reward: float | None = None  # None keeps the cfg's value
    death_penalty: float | None = None
    # human key map: key name (pygame.key.name style: "w", "left", "space") -> button index
    keys: dict[str, int] = field(default_factory=dict)
    # the key combinations a held-key player holds, (button names, weight): what the sticky recording policy and
    # eval's long held-key rollouts both play (data.policies.HeldKeys); changing them changes recordings
    held_keys: tuple[tuple[tuple[str, ...], float], ...] = KEYBOARD_HOLDS
    reward_meaning: str = ""
    description: str = ""
    # game variables recorded beside every frame (vizdoom GameVariable names): the state a frame does not show,
    # such as the health a death follows from; datasets store them per frame as float32 (docs/DATASET.md)
    state_variables: tuple[str, ...] = ()
    # (variable, threshold): the episode ends when this state variable falls to the threshold or below (take_cover
    # ends at HEALTH <= 0); a world model that predicts the variable ends its episodes the same way
    terminal_state: tuple[str, float] | None = None

    @property
    def fps(self) -> float:
        """Agent steps per second of game time (the engine runs at 35 tics/s)."""
        return 35.0 / self.frame_skip

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.frame_size[0], self.frame_size[1], 3)

    @property
    def num_buttons(self) -> int:
        return len(self.buttons)

    @property
    def action_dim(self) -> int:
        """Length of the float vector the world model is conditioned on."""
        if self.action_kind == "multibinary":
            return self.num_buttons
        return len(self.discrete_actions)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one raw gymnasium action (as recorded in datasets)."""
        return (self.num_buttons,) if self.action_kind == "multibinary" else ()

    @property
    def action_dtype(self) -> np.dtype:
        return np.dtype(np.int8) if self.action_kind == "multibinary" else np.dtype(np.int64)

    def action_space(self):
        """The gymnasium action space of one env (imported lazily: worlds needs no gym to load)."""
        from gymnasium import spaces

        if self.action_kind == "multibinary":
            return spaces.MultiBinary(self.num_buttons)
        return spaces.Discrete(len(self.discrete_actions))

    def observation_space(self):
        from gymnasium import spaces

        return spaces.Box(0, 255, self.frame_shape, np.uint8)

    def action_to_vector(self, actions: np.ndarray) -> np.ndarray:
        """Raw actions (..., *action_shape) -> float32 (..., action_dim) for the model.

        Multibinary keys pass through as 0/1; discrete actions become one-hot.
        """
        actions = np.asarray(actions)
        if self.action_kind == "multibinary":
            if actions.shape[-1:] != (self.num_buttons,):
                raise ValueError(
                    f"world {self.name!r}: expected actions with last dim {self.num_buttons}, got shape {actions.shape}"
                )
            return (actions != 0).astype(np.float32)
        n = len(self.discrete_actions)
        if actions.size and (actions.min() < 0 or actions.max() >= n):
            raise ValueError(f"world {self.name!r}: discrete actions must lie in [0, {n}), got {actions.min()}..{actions.max()}")
        return np.eye(n, dtype=np.float32)[actions.astype(np.int64)]

    def action_to_buttons(self, action) -> list[int]:
        """One raw action -> the engine's per-button 0/1 list."""
        if self.action_kind == "multibinary":
            return [int(bool(x)) for x in np.asarray(action).reshape(-1)]
        return list(self.discrete_actions[int(action)])

    def keys_to_action(self) -> dict[tuple[str, ...], object]:
        """Key-combination -> action table for `gymnasium.utils.play`.

        Keys are names (e.g. "w", "left"); the play layer turns names into key codes.
        Every subset of up to three keys that maps to a valid action is listed.
        """
        from itertools import combinations

        names = sorted(self.keys)
        table: dict[tuple[str, ...], object] = {}
        for r in range(1, min(3, len(names)) + 1):
            for combo in combinations(names, r):
                buttons = [0] * self.num_buttons
                for k in combo:
                    buttons[self.keys[k]] = 1
                if self.action_kind == "multibinary":
                    table[combo] = np.array(buttons, dtype=np.int8)
                elif tuple(buttons) in self.discrete_actions:
                    table[combo] = self.discrete_actions.index(tuple(buttons))
        return table

    def noop_action(self):
        """The action a human gives by pressing nothing."""
        if self.action_kind == "multibinary":
            return np.zeros(self.num_buttons, dtype=np.int8)
        zero = tuple([0] * self.num_buttons)
        return self.discrete_actions.index(zero) if zero in self.discrete_actions else 0
