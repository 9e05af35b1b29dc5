"""The named worlds we ship. Add a world here; bump its version when recorded data would change."""

from __future__ import annotations

from .spec import WorldSpec

DOOM_EXPLORE = WorldSpec(
    name="doom-explore",
    state_variables=("POSITION_X", "POSITION_Y", "ANGLE", "HEALTH"),
    version=1,
    env_id="odyssey_gym/DoomExplore-v0",
    engine="vizdoom",
    scenario="freedoom2.cfg",
    doom_map="MAP01",
    buttons=("MOVE_FORWARD", "MOVE_BACKWARD", "TURN_LEFT", "TURN_RIGHT", "MOVE_LEFT", "MOVE_RIGHT"),
    action_kind="multibinary",
    frame_size=(120, 160),
    render_resolution="RES_160X120",
    frame_skip=1,
    max_episode_steps=2100,
    hud=False,
    living_reward=0.0,
    keys={"w": 0, "up": 0, "s": 1, "down": 1, "left": 2, "q": 2, "right": 3, "e": 3, "a": 4, "d": 5},
    reward_meaning="none: always 0 (explore is the interactive-video world); episodes end on death or at the step limit",
    description="Freedoom2 MAP01, HUD off, 35 FPS, held keys: forward/back, turn, strafe",
)

DOOM_TAKECOVER = WorldSpec(
    name="doom-takecover",
    state_variables=("HEALTH",),
    terminal_state=("HEALTH", 0.0),
    version=1,
    env_id="odyssey_gym/DoomTakeCover-v0",
    engine="vizdoom",
    scenario="take_cover.cfg",
    doom_map=None,
    buttons=("MOVE_LEFT", "MOVE_RIGHT"),
    action_kind="discrete",
    discrete_actions=((1, 0), (0, 1), (0, 0)),
    frame_size=(64, 64),
    render_resolution="RES_160X120",
    frame_skip=4,
    max_episode_steps=525,  # 2100 tics, World Models' cap
    keys={"left": 0, "a": 0, "right": 1, "d": 1},
    reward_meaning="+1 per game tic survived (so +4 per step at frame skip 4); the episode score is tics survived",
    description="take_cover.cfg: dodge fireballs; World Models' task (solved at 750)",
)

DOOM_HEALTH = WorldSpec(
    name="doom-health",
    state_variables=("HEALTH",),
    terminal_state=("HEALTH", 0.0),
    version=1,
    env_id="odyssey_gym/DoomHealth-v0",
    engine="vizdoom",
    scenario="health_gathering.cfg",
    doom_map=None,
    buttons=("TURN_LEFT", "TURN_RIGHT", "MOVE_FORWARD"),
    action_kind="discrete",
    discrete_actions=((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    frame_size=(64, 64),
    render_resolution="RES_160X120",
    frame_skip=4,
    max_episode_steps=525,  # the cfg's 2100-tic timeout
    keys={"left": 0, "a": 0, "right": 1, "d": 1, "up": 2, "w": 2},
    reward_meaning="+1 per tic alive, -100 on death (health_gathering.cfg); medkits keep you alive",
    description="health_gathering.cfg: acid floor, gather medkits",
)

WORLDS: dict[str, WorldSpec] = {w.name: w for w in (DOOM_EXPLORE, DOOM_TAKECOVER, DOOM_HEALTH)}
