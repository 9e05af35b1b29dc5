"""odyssey-gym: real-time interactive video models served as vectorized Gymnasium environments.

`import odyssey_gym` registers the env ids (lazily: entry points are strings, so nothing
heavy is imported until an env is made):

    env = gym.make("odyssey_gym/DoomTakeCover-v0")                    # numpy single view
    envs = gym.make_vec("odyssey_gym/DoomTakeCover-v0", num_envs=64, device="cuda")
"""

__version__ = "0.1.0"


def _register_envs() -> None:
    import gymnasium as gym

    from odyssey_gym.worlds.catalog import WORLDS

    for spec in WORLDS.values():
        if spec.env_id not in gym.registry:
            _register(gym, spec.env_id, spec.max_episode_steps, world=spec.name)


def _register(gym, env_id: str, max_episode_steps: int, **kwargs) -> None:
    """One env id -> the single env and the vector env over the same world model (`kwargs` go to both)."""
    gym.register(id=env_id, entry_point="odyssey_gym.envs.single_env:WorldModelEnv",
                 vector_entry_point="odyssey_gym.envs.vector_env:WorldModelVectorEnv",
                 max_episode_steps=max_episode_steps, kwargs=kwargs)


def register_world(env_id: str, weights, max_episode_steps: int | None = None) -> str:
    """Register a built weights folder (e.g. from `odyssey-gym build`) as a gymnasium env id of your choosing, so
    `gym.make(env_id)` and `gym.make_vec(env_id, num_envs=...)` open it. The world is read from the folder's
    config.json; returns that world's name."""
    import json
    from pathlib import Path

    import gymnasium as gym

    from odyssey_gym.worlds import get_world

    cfg_path = Path(weights) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"register_world: {weights} is not a weights folder (no config.json)")
    try:
        world = json.loads(cfg_path.read_text())["world"]
        spec = get_world(world)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"register_world: {cfg_path} does not name a known world ({e})") from None
    if env_id in gym.registry:
        raise ValueError(f"register_world: env id {env_id!r} is already registered")
    _register(gym, env_id, spec.max_episode_steps if max_episode_steps is None else max_episode_steps,
              world=spec.name, weights=str(weights))
    return spec.name


try:
    _register_envs()
except ImportError:  # gymnasium missing: the package still imports (e.g. for data tools)
    pass

