"""The built wheel carries every shipped file: pyproject's package-data globs cover each file under
odyssey_gym/weights/ and the web page's static folder (a probe/ subfolder once fell outside them, so an installed
`odyssey-gym eval` silently skipped controllability and realism)."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "odyssey_gym"
SHIPPED = ("weights", "play/web/static")


def package_data_globs() -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        pytest.skip("tomllib needs Python 3.11")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return cfg["tool"]["setuptools"]["package-data"]["odyssey_gym"]


def tracked_files() -> list[str]:
    """Files git tracks under the shipped folders (a checkout's stray files, e.g. __pycache__, do not count)."""
    try:
        out = subprocess.run(["git", "ls-files", *[f"odyssey_gym/{d}" for d in SHIPPED]], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [str(Path(line).relative_to("odyssey_gym")) for line in out.splitlines()
            if line and not line.endswith(".py")]


def test_package_data_covers_every_shipped_file():
    # setuptools expands package-data like glob.glob relative to the package: '*' never crosses a '/'
    covered = {m for pattern in package_data_globs() for m in glob.glob(pattern, root_dir=PACKAGE)}
    files = tracked_files()
    assert files, "no shipped files found"
    missing = sorted(set(files) - covered)
    assert not missing, f"not in the wheel (add a package-data glob in pyproject.toml): {missing}"


def test_shipped_probe_is_in_the_wheel():
    covered = {m for pattern in package_data_globs() for m in glob.glob(pattern, root_dir=PACKAGE)}
    probes = [p for p in covered if "/probe/" in p]
    if not any((PACKAGE / "weights").glob("*/probe/probe.json")):
        pytest.skip("no shipped probe")
    assert any(p.endswith("probe.json") for p in probes) and any(p.endswith(".safetensors") for p in probes)
