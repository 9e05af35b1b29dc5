"""Keyboard play, headless: SDL dummy driver, posted pygame key events, logged env actions."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

from tiny_weights import make_tiny_weights


@pytest.fixture(autouse=True)
def dummy_sdl(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_weights("doom-explore", tmp_path_factory.mktemp("tiny_play"), n_starts=2)


class ActionLog(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.actions = []

    def step(self, action):
        self.actions.append(np.asarray(action).copy())
        return super().step(action)


def test_play_sends_key_actions(weights):
    import pygame

    from odyssey_gym.envs.single_env import WorldModelEnv
    from odyssey_gym.play.keyboard import play_keyboard

    env = ActionLog(WorldModelEnv("doom-explore", weights=weights))
    # the events to post after each step: (KEYDOWN|KEYUP, key); then quit
    script = {
        1: [(pygame.KEYDOWN, pygame.K_w)],
        3: [(pygame.KEYDOWN, pygame.K_LEFT)],
        5: [(pygame.KEYUP, pygame.K_w)],
        7: [(pygame.KEYUP, pygame.K_LEFT), (pygame.KEYDOWN, pygame.K_d)],
        9: [(pygame.KEYUP, pygame.K_d)],
        11: "quit",
    }
    n = {"steps": 0}

    def callback(obs_t, obs_tp1, action, rew, terminated, truncated, info):
        n["steps"] += 1
        ev = script.get(n["steps"])
        if ev == "quit":
            pygame.event.post(pygame.event.Event(pygame.QUIT))
        elif ev:
            for typ, key in ev:
                pygame.event.post(pygame.event.Event(typ, key=key))

    play_keyboard(env, zoom=1, fps=1000, seed=0, callback=callback, allow_dummy=True)
    acts = np.stack(env.actions)
    fwd, left, strafe_r = [1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]
    expected = (
        [[0] * 6]  # step 1: nothing pressed -> noop
        + [fwd] * 2  # steps 2-3: w held
        + [np.add(fwd, left).tolist()] * 2  # steps 4-5: w + left
        + [left] * 2  # steps 6-7: left
        + [strafe_r] * 2  # steps 8-9: d
        + [[0] * 6] * 2  # steps 10-11: noop
    )
    assert acts.tolist() == expected


def test_play_cli_without_display_points_to_web(monkeypatch, capsys):
    from odyssey_gym.cli import main

    rc = main(["play", "--world", "doom-explore"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "odyssey-gym play --web" in err and "display" in err
    monkeypatch.delenv("SDL_VIDEODRIVER")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rc = main(["play", "--world", "doom-explore"])
    assert rc == 2 and "--web" in capsys.readouterr().err


def test_play_cli_headless_runs_with_allow_dummy(weights, monkeypatch):
    import pygame

    from odyssey_gym.cli import main

    real_get = pygame.event.get
    calls = {"n": 0}

    def get(*a, **k):  # quit after a few frames
        calls["n"] += 1
        if calls["n"] == 5:
            pygame.event.post(pygame.event.Event(pygame.QUIT))
        return real_get(*a, **k)

    monkeypatch.setattr(pygame.event, "get", get)
    rc = main(["play", "--world", "doom-explore", "--weights", str(weights), "--device", "cpu", "--zoom", "1",
               "--fps", "1000", "--allow-dummy"])
    assert rc == 0 and calls["n"] >= 5
