"""The lock file pins a version inside every range requirements.txt allows, pins nothing twice and no asset package."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def requirements(name: str) -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def test_the_lock_pins_one_version_in_every_allowed_range():
    pins = requirements("requirements.lock")
    versions = {canonicalize_name(pin.name): next(iter(pin.specifier)).version for pin in pins}
    assert len(versions) == len(pins), "a package is pinned twice"
    assert all(len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "==" for pin in pins)
    assets = {canonicalize_name(pin.name) for pin in requirements("requirements-assets.txt")}
    assert not assets & set(versions), "asset packages install without dependencies: keep them out of the lock"
    for wanted in requirements("requirements.txt"):
        version = versions.get(canonicalize_name(wanted.name))
        assert version is not None, f"{wanted.name} is not in requirements.lock"
        assert wanted.specifier.contains(version, prereleases=True), f"{wanted.name}=={version} is outside {wanted}"
