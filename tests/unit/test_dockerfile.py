"""The Dockerfile cannot be built here (no Docker, no registry), and ``make image``
(kokpit/local/kokpit_image.py) is the recipe that is built and tested. These checks keep the
two from drifting apart where a pod would notice: the lock, the virtualenv's path, the user,
entrypoint, environment and labels."""

import json
import re
from pathlib import Path

from kokpit.local import kokpit_image

DOCKERFILE = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
#: The final stage: from the last FROM on.
FINAL = DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]


def instruction(name: str) -> str:
    """The arguments of the final stage's one ``name`` instruction, continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", FINAL)
    [found] = re.findall(rf"^{name} (.+)$", joined, re.M)
    return str(found)


def test_both_stages_start_from_the_python_minor_the_image_recipe_uses() -> None:
    assert (
        re.findall(r"^FROM python:\$\{PYTHON\}-slim-bookworm", DOCKERFILE, re.M)
        == ["FROM python:${PYTHON}-slim-bookworm"] * 2
    )
    assert "ARG PYTHON=3.11\n" in DOCKERFILE
    assert kokpit_image.SUITE == "bookworm"


def test_the_builder_installs_the_hash_pinned_runtime_lock_as_wheels() -> None:
    builder = DOCKERFILE[: DOCKERFILE.rindex("\nFROM ")]
    assert "--require-hashes --no-deps --only-binary=:all:" in builder
    assert "-r requirements-image.lock" in builder
    assert f"python -m venv {kokpit_image.VENV}" in builder
    assert "pip uninstall -y -q pip" in builder


def test_the_final_stage_runs_as_the_image_recipe_does() -> None:
    assert instruction("USER") == f"{kokpit_image.USER}:{kokpit_image.USER}"
    assert json.loads(instruction("ENTRYPOINT")) == ["kokpit"]
    assert json.loads(instruction("CMD")) == ["--help"]
    assert instruction("WORKDIR") == "/home/nonroot"
    assert f"COPY --from=builder {kokpit_image.VENV} {kokpit_image.VENV}" in FINAL
    env = instruction("ENV").split()
    assert env[0].startswith(f"PATH={kokpit_image.VENV}/bin:")
    assert env[1:] == list(kokpit_image.ENV[1:])
    assert kokpit_image.PASSWD_ENTRY.strip() in FINAL
    assert "gcc" not in FINAL
    assert "pip uninstall -y -q pip setuptools wheel" in FINAL


def test_the_final_stage_sets_the_same_labels() -> None:
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', FINAL))
    wanted = kokpit_image.Labels(version="${VERSION}", revision="${REVISION}", source="${SOURCE}")
    assert labels == wanted.as_dict()
