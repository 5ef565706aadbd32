"""Build the local base images: a Debian root file system made by mmdebstrap, imported, then one
`docker build` of the recipe's Dockerfile on top of it.

Cached by content: an image is tagged with the sha256 of its recipe folder (and, for python, the
wheels it installs are pinned in the recipe), so `ensure_images` builds only what is missing or
whose recipe changed, and moves the stable alias (`ultra-local/postgres:15`) onto it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ultra_ops.engine import shell
from ultra_ops.engine.errors import CommandFailed, OperationError

RECIPES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "images"
WHEELHOUSE = Path(__file__).resolve().parents[2] / "var" / "images" / "wheelhouse"
SUITE = "bookworm"
# Manuals, docs and translations are no use in a container and are a third of a Python rootfs.
_TRIM = ["path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/locale/*"]
_DOCKER_S = 60.0
_ROOTFS_S = 900.0
_BUILD_S = 900.0


@dataclass(frozen=True)
class Recipe:
    name: str  # folder under deploy/images/
    alias: str  # the stable tag the local config and the tests name
    variable: str  # the compose variable / build argument it is used through

    @property
    def folder(self) -> Path:
        return RECIPES_DIR / self.name

    def packages(self) -> list[str]:
        lines = (self.folder / "packages").read_text().splitlines()
        return [p.strip() for p in lines if p.strip() and not p.startswith("#")]

    def digest(self) -> str:
        """sha256 over the recipe's files (names and contents) and the suite: what the image is made of."""
        h = hashlib.sha256(SUITE.encode())
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            h.update(path.relative_to(self.folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        return h.hexdigest()[:16]

    def rootfs_digest(self) -> str:
        """What the imported root file system is made of: the suite, the packages and the trim."""
        return hashlib.sha256("\0".join([SUITE, *self.packages(), *_TRIM]).encode()).hexdigest()[:16]

    @property
    def image(self) -> str:
        return f"ultra-local/{self.name}:{self.digest()}"


RECIPES = (
    Recipe("python", "ultra-local/python:3.11", "ULTRA_PYTHON_IMAGE"),
    Recipe("postgres", "ultra-local/postgres:15", "ULTRA_POSTGRES_IMAGE"),
    Recipe("redis", "ultra-local/redis:7", "ULTRA_REDIS_IMAGE"),
    # The platform stack's Docker API proxies (docker-compose.yml): tecnativa/docker-socket-proxy elsewhere.
    Recipe("socket-proxy", "ultra-local/socket-proxy:0.3.0", "DOCKER_SOCKET_PROXY_IMAGE"),
)
# A machine of its own for the tests of environments on other hosts: sshd and its own Docker engine.
# Apart from RECIPES: only the host tests need it, never the platform image or the compose files.
HOST_RECIPE = Recipe("host", "ultra-local/host:bookworm", "ULTRA_HOST_IMAGE")


def image_variables() -> dict[str, str]:
    """ULTRA_PYTHON_IMAGE=ultra-local/python:3.11 ...: what points the shipped files at the local images."""
    return {r.variable: r.alias for r in RECIPES}


def docker(*args: str, timeout: float = _DOCKER_S, cwd: Path | None = None) -> str:
    # DOCKER_BUILDKIT=0: the legacy builder is the one every client here has (no buildx).
    return shell.run(["docker", *args], timeout=timeout, cwd=cwd, env={"DOCKER_BUILDKIT": "0"}).stdout


def image_exists(image: str) -> bool:
    try:
        docker("image", "inspect", "--format", "{{.Id}}", image)
    except CommandFailed:
        return False
    return True


def ensure_images(log: Callable[[str], None] = lambda _: None, recipes: tuple[Recipe, ...] = RECIPES) -> list[str]:
    """Build every recipe whose content-tagged image is missing; point each alias at its image."""
    done = []
    for recipe in recipes:
        image = recipe.image
        if image_exists(image):
            if not _points_at(recipe.alias, image):
                docker("tag", image, recipe.alias)
            done.append(f"{recipe.alias} is {image} (cached)")
            continue
        log(f"building {image} (first time for this recipe; a few minutes)")
        try:
            _build(recipe, image, log)
        except CommandFailed as exc:
            raise OperationError(f"building the local image {image} failed: {exc}") from None
        docker("tag", image, recipe.alias)
        done.append(f"{recipe.alias} is {image} (built)")
    return done


def _points_at(alias: str, image: str) -> bool:
    try:
        ids = {docker("image", "inspect", "--format", "{{.Id}}", name).strip() for name in (alias, image)}
    except CommandFailed:
        return False
    return len(ids) == 1


def _build(recipe: Recipe, image: str, log: Callable[[str], None]) -> None:
    rootfs_image = f"ultra-local/{recipe.name}-rootfs:{recipe.rootfs_digest()}"
    with tempfile.TemporaryDirectory(prefix=f"ultra-image-{recipe.name}-") as tmp:
        context = Path(tmp) / "context"
        shell.run(["cp", "-a", str(recipe.folder), str(context)], timeout=60)
        if not image_exists(rootfs_image):
            tarball = Path(tmp) / "rootfs.tar"
            log(f"mmdebstrap {SUITE} with {', '.join(recipe.packages())}")
            shell.run(
                [
                    "mmdebstrap",
                    "--variant=minbase",
                    "--include=" + ",".join(recipe.packages()),
                    *[f"--dpkgopt={opt}" for opt in _TRIM],
                    SUITE,
                    str(tarball),
                    *([os.environ["ULTRA_DEBIAN_MIRROR"]] if os.environ.get("ULTRA_DEBIAN_MIRROR") else []),
                ],
                timeout=_ROOTFS_S,
            )
            docker("import", str(tarball), rootfs_image, timeout=_ROOTFS_S)
        if (recipe.folder / "requirements.txt").is_file():
            _wheelhouse(recipe.folder / "requirements.txt", context / "wheelhouse", log)
        log(f"docker build {image}")
        docker(
            "build",
            "--quiet",
            "--force-rm",  # no stopped container left behind by a failed step
            "--build-arg",
            f"ROOTFS={rootfs_image}",
            "--label",
            f"org.ultra-ops.recipe={recipe.name}",
            "--label",
            f"org.ultra-ops.recipe-sha256={recipe.digest()}",
            "-t",
            image,
            str(context),
            timeout=_BUILD_S,
        )


def _wheelhouse(requirements: Path, dest: Path, log: Callable[[str], None]) -> None:
    """Wheels for the image, downloaded on the host (pip in a container cannot reach the index),
    kept under var/images/wheelhouse between builds, copied into the build context."""
    cache = WHEELHOUSE / hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    if not (cache / ".complete").is_file():
        log(f"downloading wheels for {requirements}")
        cache.mkdir(parents=True, exist_ok=True)
        shell.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary=:all:",
                "-d",
                str(cache),
                "-r",
                str(requirements),
            ],
            timeout=_BUILD_S,
            env={k: v for k, v in os.environ.items() if k.startswith("PIP_")},
        )
        (cache / ".complete").write_text("")
    shell.run(["cp", "-a", str(cache), str(dest)], timeout=60)
