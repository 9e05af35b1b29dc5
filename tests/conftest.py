"""Suite-wide settings: fast and isolated on a small CPU-only box (CI has 2 cores, no display, no GPU).

- one intra-op thread for torch / OpenMP / MKL (tests are tiny; more threads only add contention, and
  engine/collector subprocesses inherit the env);
- headless SDL (pygame, vizdoom) and matplotlib;
- minari datasets go to a per-session temp dir, never ~/.minari;
- no test may rely on the shipped weights in odyssey_gym/weights/ (git-ignored for now): tests build
  tiny weights with tiny_weights.make_tiny_weights. The one exception,
  tests/test_shipped_weights.py, skips itself when they are absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile

# Before torch (and anything that loads OpenMP) is imported by a test module.
for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
# Set at import so that anything reading it early already sees a temp dir; the session fixture below
# replaces it with one under pytest's basetemp.
_MINARI_TMP = tempfile.mkdtemp(prefix="odyssey-minari-")
os.environ["MINARI_DATASETS_PATH"] = _MINARI_TMP

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:  # already set, or parallel work already ran
    pass


@pytest.fixture(scope="session", autouse=True)
def _isolated_minari(tmp_path_factory):
    path = tmp_path_factory.mktemp("minari_datasets")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Keep a test that raised the thread count (or a library that did) from slowing the rest."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def pytest_unconfigure(config):
    shutil.rmtree(_MINARI_TMP, ignore_errors=True)
