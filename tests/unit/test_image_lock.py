"""The image installs requirements-image.lock; the tests run on requirements.lock. The image
must run exactly what the tests tested: every pin of the image's lock, with its hashes, is in
the test lock, and the image's lock holds every runtime dependency pyproject.toml names."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([a-z0-9][a-z0-9._-]*)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})+)", re.M)


def pins(lock: str) -> dict[str, tuple[str, frozenset[str]]]:
    """name → (version, hashes) of a uv-compiled lock."""
    return {
        m[1]: (m[2], frozenset(re.findall(r"sha256:([0-9a-f]{64})", m[3])))
        for m in PIN.finditer(lock)
    }


def test_the_image_lock_pins_what_the_tests_run() -> None:
    image = pins((ROOT / "requirements-image.lock").read_text())
    tested = pins((ROOT / "requirements.lock").read_text())
    assert image, "requirements-image.lock has no pins"
    differing = {name: pin[0] for name, pin in image.items() if tested.get(name) != pin}
    assert differing == {}


def test_the_image_lock_holds_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    image = pins((ROOT / "requirements-image.lock").read_text())
    assert wanted - image.keys() == set()
    # and none of the development tools
    assert {"pytest", "ruff", "mypy", "sushy-tools"} & image.keys() == set()
