"""Behaviour policies for recording: `policy.reset(obs)` at an episode start, `policy.act(obs) -> action`.

- `StickyRandomPolicy`: random key-holds of log-uniform length (as a person holds keys), plausible
  key combinations only, and a wall-escape reflex (turn away when moving but the frame stops changing).
- `HeldKeys(spec)`: the world's held-key process (which combination, held how long), shared by the sticky
  policy and eval's long held-key rollouts.
- `HumanLikePolicy`: how people play a first-person game (long forward walks, turns while walking, turns in
  place, strafes, stops, back-offs), as a chain of modes with durations in seconds; two profiles:
  "walker" (a recording policy) and "human" (another process, the held-out yardstick of `odyssey-gym eval`).
- `RandomPolicy`: a fresh uniform action every step.
- `CallablePolicy(f)`: any `f(obs) -> action`; `SB3Policy(model)`: any object with `.predict(obs, deterministic=)`.
- `make_policy("sticky" | "walker" | "human" | "random" | "path/to/sb3.zip", spec, rng)` and `as_policy(obj, spec, rng)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..worlds.spec import WorldSpec

_MOVES = {"MOVE_FORWARD", "MOVE_BACKWARD", "MOVE_LEFT", "MOVE_RIGHT"}
_OPPOSITE = {"MOVE_FORWARD": "MOVE_BACKWARD", "MOVE_BACKWARD": "MOVE_FORWARD", "MOVE_LEFT": "MOVE_RIGHT",
             "MOVE_RIGHT": "MOVE_LEFT", "TURN_LEFT": "TURN_RIGHT", "TURN_RIGHT": "TURN_LEFT"}


def held_key_choices(spec: WorldSpec) -> tuple[list[set[str]], np.ndarray]:
    """The key combinations a held-key player of `spec` picks from, as sets of button names, with probabilities.

    Multibinary worlds: the entries of the world's `held_keys` (button names, weight) whose buttons it has, found
    by name so any button order works; buttons no entry covers are held alone (weight 1; e.g. a Gymnasium env's
    BUTTON_i). Discrete worlds: each of the world's actions, equally likely."""
    names = list(spec.buttons)
    if spec.action_kind == "multibinary":
        combos = [(set(c), w) for c, w in spec.held_keys if all(b in names for b in c)]
        covered = set().union(*(c for c, _ in combos)) if combos else set()
        combos += [({b}, 1.0) for b in names if b not in covered]  # buttons the table knows nothing of: alone
    else:
        combos = [({names[j] for j, v in enumerate(a) if v}, 1.0) for a in spec.discrete_actions]
    w = np.array([w for _, w in combos], np.float64)
    return [c for c, _ in combos], w / w.sum()


def hold_length(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Steps to hold a key: log-uniform in [lo, hi], so short taps are common and long holds happen, as a person
    holds keys."""
    return int(round(np.exp(rng.uniform(np.log(lo), np.log(hi + 0.999)))))


class HeldKeys:
    """A world's held-key process: which key combination to hold next and for how many steps.

    The one rule behind the sticky recording policy and eval's long held-key rollouts, so eval plays the keys the
    data was recorded with. Holds are log-uniform in [min_hold, max_hold] steps; max_hold defaults to 60 game
    tics' worth of steps (at least 2), so a hold lasts as long in game time at any frame skip."""

    def __init__(self, spec: WorldSpec, min_hold: int = 2, max_hold: int | None = None):
        self.combos, self.p = held_key_choices(spec)
        self.min_hold = max(1, int(min_hold))
        self.max_hold = max(self.min_hold, int(max_hold if max_hold is not None else max(2, 60 // spec.frame_skip)))

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """(index into `combos`, hold length in steps)."""
        i = int(rng.choice(len(self.combos), p=self.p))
        return i, hold_length(rng, self.min_hold, self.max_hold)


class Policy:
    def reset(self, obs: np.ndarray | None = None) -> None:
        pass

    def act(self, obs: np.ndarray) -> Any:
        raise NotImplementedError

    def __call__(self, obs):
        return self.act(obs)


class RandomPolicy(Policy):
    """A fresh uniformly random action each step (seeded)."""

    def __init__(self, spec: WorldSpec, rng: np.random.Generator | int | None = None):
        self.spec = spec
        self.space = spec.action_space()
        self.space.seed(int(np.random.default_rng(rng).integers(2**31)))

    def act(self, obs):
        return self.space.sample()


class StickyRandomPolicy(Policy):
    """Random key-holds of varied length with wall-escape.

    Each hold is a draw of the world's `HeldKeys` (multibinary: the world's weighted `held_keys` combos, never
    forward+back or left+right together; discrete: one of the world's actions; log-uniform hold lengths).
    Wall escape: if a movement key is held and the mean absolute change of a downsampled frame stays
    below `still_threshold` for `stuck_steps` steps, the policy turns away (or reverses, in worlds
    without turn keys) for a random 8..30-tic hold.
    """

    def __init__(self, spec: WorldSpec, rng: np.random.Generator | int | None = None, min_hold: int = 2,
                 max_hold: int | None = None, still_threshold: float = 0.5, stuck_steps: int | None = None):
        self.spec = spec
        self.rng = np.random.default_rng(rng)
        self.holds = HeldKeys(spec, min_hold, max_hold)
        self.still_threshold = float(still_threshold)
        self.stuck_steps = int(stuck_steps if stuck_steps is not None else max(2, 6 // spec.frame_skip))
        self._index = {b: i for i, b in enumerate(spec.buttons)}
        self._hold_left = 0
        self._current: set[str] = set()
        self._prev_small: np.ndarray | None = None
        self._still = 0
        self.escapes = 0

    def _encode(self, pressed: set[str]):
        if self.spec.action_kind == "multibinary":
            a = np.zeros(self.spec.num_buttons, np.int8)
            for b in pressed:
                a[self._index[b]] = 1
            return a
        want = tuple(int(b in pressed) for b in self.spec.buttons)
        return self.spec.discrete_actions.index(want) if want in self.spec.discrete_actions else self.spec.noop_action()

    def _new_hold(self) -> None:
        i, self._hold_left = self.holds.draw(self.rng)
        self._current = self.holds.combos[i]

    def _escape(self) -> None:
        """Turn away from the wall; without turn keys, reverse the movement."""
        self.escapes += 1
        turns = [b for b in ("TURN_LEFT", "TURN_RIGHT") if b in self._index]
        if turns:
            pressed = {turns[self.rng.integers(len(turns))]}
            if "MOVE_BACKWARD" in self._index and self.rng.random() < 0.3:
                pressed.add("MOVE_BACKWARD")
        else:
            pressed = {_OPPOSITE[b] for b in self._current if _OPPOSITE.get(b) in self._index}
        if self.spec.action_kind == "discrete" and tuple(int(b in pressed) for b in self.spec.buttons) not in self.spec.discrete_actions:
            pressed = {next(iter(pressed))} if pressed else set()
        self._current = pressed
        fs = self.spec.frame_skip
        self._hold_left = hold_length(self.rng, max(1, 8 // fs), max(2, 30 // fs))
        self._still = 0

    def reset(self, obs=None) -> None:
        self._hold_left = 0
        self._prev_small = None
        self._still = 0
        self._new_hold()

    def act(self, obs):
        if obs is not None:
            small = np.asarray(obs)[::4, ::4].astype(np.int16)
            if self._prev_small is not None and self._current & _MOVES:
                change = float(np.abs(small - self._prev_small).mean())
                self._still = self._still + 1 if change < self.still_threshold else 0
            else:
                self._still = 0
            self._prev_small = small
        if self._still >= self.stuck_steps:
            self._escape()
        elif self._hold_left <= 0:
            self._new_hold()
        self._hold_left -= 1
        return self._encode(self._current)


# Human-like play as modes: (held buttons, each alternative equally likely; duration range in seconds; weight).
# Durations are log-uniform in the range. "walker" favours long walks with turns while walking; "human" is a
# different process (other weights and durations, look-around turns, more stops and strafes), so a model
# evaluated on "human" play is not scored on the process it was recorded with.
_HUMAN_PROFILES: dict[str, dict[str, tuple[list[tuple[str, ...]], tuple[float, float], float]]] = {
    "walker": {
        "walk": ([("MOVE_FORWARD",)], (0.8, 6.0), 5.0),
        "walk_turn": ([("MOVE_FORWARD", "TURN_LEFT"), ("MOVE_FORWARD", "TURN_RIGHT")], (0.15, 1.5), 4.0),
        "turn": ([("TURN_LEFT",), ("TURN_RIGHT",)], (0.15, 1.2), 2.0),
        "strafe": ([("MOVE_LEFT",), ("MOVE_RIGHT",), ("MOVE_FORWARD", "MOVE_LEFT"), ("MOVE_FORWARD", "MOVE_RIGHT")],
                   (0.2, 1.5), 1.5),
        "stop": ([()], (0.2, 1.5), 1.0),
        "back": ([("MOVE_BACKWARD",), ("MOVE_BACKWARD", "TURN_LEFT"), ("MOVE_BACKWARD", "TURN_RIGHT")], (0.2, 1.0), 0.7),
    },
    "human": {
        "walk": ([("MOVE_FORWARD",)], (1.5, 9.0), 4.0),
        "walk_turn": ([("MOVE_FORWARD", "TURN_LEFT"), ("MOVE_FORWARD", "TURN_RIGHT")], (0.3, 2.5), 3.0),
        "look": ([("TURN_LEFT",), ("TURN_RIGHT",)], (0.3, 2.5), 1.5),
        "strafe": ([("MOVE_LEFT",), ("MOVE_RIGHT",)], (0.3, 2.0), 1.5),
        "circle": ([("MOVE_LEFT", "TURN_RIGHT"), ("MOVE_RIGHT", "TURN_LEFT")], (0.5, 2.0), 0.5),
        "stop": ([()], (0.5, 3.0), 1.5),
        "back": ([("MOVE_BACKWARD",)], (0.3, 1.5), 0.8),
    },
}


class HumanLikePolicy(StickyRandomPolicy):
    """Human-like key play: a chain of modes (walk, turn while walking, turn, strafe, stop, back off), each
    held for a log-uniform number of seconds, never the same mode twice in a row except walking; with the
    sticky policy's wall escape. Modes whose buttons the world lacks are dropped (a world with none of them
    falls back to the sticky policy's key combinations)."""

    def __init__(self, spec: WorldSpec, rng: np.random.Generator | int | None = None, profile: str = "walker"):
        super().__init__(spec, rng)
        if profile not in _HUMAN_PROFILES:
            raise ValueError(f"unknown human-like profile {profile!r}; known: {sorted(_HUMAN_PROFILES)}")
        self.profile = profile
        steps_per_s = spec.fps  # env steps per second (35 tics / frame skip)
        self._modes = []
        for name, (alts, (lo, hi), w) in _HUMAN_PROFILES[profile].items():
            alts = [set(a) for a in alts if all(b in self._index for b in a)]
            if alts and (spec.action_kind == "multibinary" or all(self._encodable(a) for a in alts)):
                self._modes.append((name, alts, max(1.0, lo * steps_per_s), max(1.0, hi * steps_per_s), w))
        if all(m[0] == "stop" for m in self._modes):  # stopping (no buttons) fits every world: alone it is no play
            self._modes = []
        self._mode: str | None = None

    def _encodable(self, pressed: set[str]) -> bool:
        return tuple(int(b in pressed) for b in self.spec.buttons) in self.spec.discrete_actions

    def _new_hold(self) -> None:
        if not self._modes:
            return super()._new_hold()
        cand = [m for m in self._modes if m[0] != self._mode or m[0] == "walk"]
        w = np.array([m[4] for m in cand], np.float64)
        name, alts, lo, hi, _ = cand[self.rng.choice(len(cand), p=w / w.sum())]
        self._mode = name
        self._current = alts[self.rng.integers(len(alts))]
        self._hold_left = int(round(np.exp(self.rng.uniform(np.log(lo), np.log(hi)))))

    def reset(self, obs=None) -> None:
        self._mode = None
        super().reset(obs)


class CallablePolicy(Policy):
    """Wrap any `f(obs) -> action`."""

    def __init__(self, fn: Callable[[np.ndarray], Any]):
        self.fn = fn

    def act(self, obs):
        return self.fn(obs)


class SB3Policy(Policy):
    """Wrap a Stable-Baselines3 model (anything with `.predict(obs, deterministic=False)`).

    A model trained on stacked frames (agents/train_ppo.py stacks 4 on the channel axis, so its image space
    has 3*k channels) gets the last k frames stacked the same way, the first frame repeated at reset, so
    `collect --policy runs/ppo/.../policy.zip` records with the agent itself.
    """

    def __init__(self, model, deterministic: bool = False):
        self.model = model
        self.deterministic = deterministic
        # an object with only .predict (no observation space to read) sees one frame at a time
        self.stack = sb3_frame_stack(model) if getattr(model, "observation_space", None) is not None else 1
        self._frames: list[np.ndarray] = []

    def reset(self, obs=None) -> None:
        self._frames = [] if obs is None else [obs] * self.stack

    def act(self, obs):
        if self.stack > 1 and obs is not None:
            self._frames = (self._frames or [obs] * self.stack)[1:] + [obs]
            obs = np.concatenate(self._frames, axis=-1)
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return action


SB3_ALGORITHMS = ("PPO", "A2C", "DQN", "SAC", "TD3", "DDPG")


def load_sb3(path: str, device: str = "cpu"):
    """Load an SB3 model zip, trying the common algorithms (the zip does not say which one saved it).

    The one loader behind `record --agent`, `collect --policy` and agents/evaluate.py, so a policy that loads in
    one loads in all of them."""
    import stable_baselines3 as sb3

    if not Path(path).is_file():
        raise FileNotFoundError(f"SB3 model {path!r} does not exist")
    errors = []
    for name in SB3_ALGORITHMS:
        try:
            return getattr(sb3, name).load(path, device=device)
        except Exception as e:  # wrong class for this zip
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise ValueError(f"could not load SB3 model {path!r}:\n  " + "\n  ".join(errors))


def sb3_frame_stack(model) -> int:
    """How many RGB frames an SB3 policy sees at once, read from its own observation space.

    Frames are stacked on the channel axis of HWC observations (VecFrameStack, channels last); SB3's CNN
    policies store the space transposed to CHW, so the channel count is whichever end axis is smaller:
    (64, 64, 12) and (12, 64, 64) both mean 4 frames. Anything but 3*k channels is refused."""
    shape = tuple(getattr(getattr(model, "observation_space", None), "shape", None) or ())
    if len(shape) != 3:
        raise ValueError(f"the SB3 policy's observation space has shape {shape}; an image policy needs (H, W, 3k) "
                         f"or (3k, H, W)")
    channels = min(shape[0], shape[-1])
    if channels % 3:
        raise ValueError(f"the SB3 policy's observation space has shape {shape}: {channels} channels is not a "
                         f"stack of RGB frames")
    return channels // 3


def check_sb3_observations(model, frame_shape: tuple[int, int, int]) -> int:
    """The policy's frame stack, after checking that `frame_shape` (H, W, 3) frames stacked that many times are
    what it was trained on; a clear error otherwise (not a shape error deep inside SB3)."""
    k = sb3_frame_stack(model)
    h, w, c = frame_shape
    want = tuple(model.observation_space.shape)
    if want not in ((h, w, c * k), (c * k, h, w)):
        raise ValueError(f"the SB3 policy expects observations of shape {want}, but this world's frames are "
                         f"{(h, w, c)} (x{k} stacked: {(h, w, c * k)}): was it trained on another world?")
    return k


def as_policy(obj, spec: WorldSpec | None = None, rng=None) -> Policy:
    """Anything usable as a behaviour policy -> Policy."""
    if isinstance(obj, Policy):
        return obj
    if hasattr(obj, "predict"):
        return SB3Policy(obj)
    if callable(obj):
        return CallablePolicy(obj)
    if isinstance(obj, str):
        return make_policy(obj, spec, rng)
    raise TypeError(f"cannot use {type(obj).__name__} as a policy (need a Policy, a callable f(obs), or an SB3 model)")


POLICY_NAMES = ("sticky", "walker", "human", "random")


def make_policy(name: str, spec: WorldSpec, rng=None) -> Policy:
    """'sticky' | 'walker' | 'human' | 'random' | a path to an SB3 .zip."""
    if name == "sticky":
        return StickyRandomPolicy(spec, rng)
    if name in _HUMAN_PROFILES:
        return HumanLikePolicy(spec, rng, profile=name)
    if name == "random":
        return RandomPolicy(spec, rng)
    if name.endswith(".zip"):
        model = load_sb3(name)
        check_sb3_observations(model, spec.frame_shape)
        return SB3Policy(model)
    raise ValueError(f"unknown policy {name!r}: use one of {', '.join(POLICY_NAMES)} or a path to an SB3 .zip")
