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
        if spec.env_id in gym.registry:
            continue
        gym.register(
            id=spec.env_id,
            entry_point="odyssey_gym.envs.single_env:WorldModelEnv",
            vector_entry_point="odyssey_gym.envs.vector_env:WorldModelVectorEnv",
            max_episode_steps=spec.max_episode_steps,
            kwargs={"world": spec.name},
        )


try:
    _register_envs()
except ImportError:  # gymnasium missing: the package still imports (e.g. for data tools)
    pass

