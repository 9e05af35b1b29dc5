"""Play a world model with the keyboard in a pygame window (through `gymnasium.utils.play`)."""

from __future__ import annotations

import os

__all__ = ["NoDisplayError", "check_display", "play_keyboard"]


class NoDisplayError(RuntimeError):
    """No window can be opened here."""


NO_DISPLAY_HINT = "no display to open a window on; use the browser page instead: odyssey-gym play --web"


def check_display(allow_dummy: bool = False) -> None:
    """Raise `NoDisplayError` unless pygame can open a real window (or `allow_dummy` with SDL's dummy driver)."""
    driver = os.environ.get("SDL_VIDEODRIVER", "")
    if driver in ("dummy", "offscreen"):
        if allow_dummy:
            return
        raise NoDisplayError(f"SDL_VIDEODRIVER={driver}: {NO_DISPLAY_HINT} (or pass --allow-dummy for a headless run)")
    import sys

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise NoDisplayError(f"DISPLAY is not set: {NO_DISPLAY_HINT}")
    import pygame

    try:
        pygame.display.init()
    except pygame.error as e:
        raise NoDisplayError(f"SDL cannot open a display ({e}): {NO_DISPLAY_HINT}") from None
    finally:
        pygame.display.quit()


def play_keyboard(env, zoom: float = 4.0, fps: int | None = None, seed: int | None = None,
                  callback=None, allow_dummy: bool = False) -> None:
    """Open a window and play `env` (a `WorldModelEnv`, possibly wrapped) with its key map.

    Nothing pressed sends the world's noop action. Esc or closing the window quits.
    """
    import warnings

    import pygame

    with warnings.catch_warnings():
        # gymnasium.utils.play imports matplotlib's TkAgg backend for its optional PlayPlot, which this window
        # does not use; without Tk it warns "matplotlib is not installed" even when matplotlib is
        warnings.filterwarnings("ignore", message=".*matplotlib is not installed.*")
        from gymnasium.utils.play import play

    check_display(allow_dummy=allow_dummy)
    unwrapped = env.unwrapped
    pygame.display.init()
    pygame.display.set_caption(f"odyssey-gym: {unwrapped.world.name} (Esc quits)")
    keys = unwrapped.get_keys_to_action()
    noop = unwrapped.world.noop_action()
    play(env, keys_to_action=keys, noop=noop, zoom=zoom, fps=fps or unwrapped.metadata["render_fps"],
         seed=seed, callback=callback)
