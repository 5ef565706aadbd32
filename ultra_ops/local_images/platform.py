"""Build the ultra_ops image (the repository's Dockerfile) where nothing can be pulled: FROM the local
python image (build argument PYTHON_IMAGE), ultra_ops and the pinned Dagster family installed from a
wheelhouse made on the host (pip in a container cannot reach the index here; an air-gapped host
builds the same way).

Cached by content: the image is tagged `ultra-local/ultra_ops:<sha256>` of what goes into it (the
build context's files and the base image's id), so a second call with nothing changed builds nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ultra_ops.engine import shell
from ultra_ops.engine.errors import CommandFailed, OperationError
from ultra_ops.local_images.images import RECIPES, WHEELHOUSE, docker, ensure_images, image_exists

REPO = Path(__file__).resolve().parents[2]
IMAGE_NAME = "ultra-local/ultra_ops"
ALIAS = f"{IMAGE_NAME}:latest"
# What the Dockerfile copies from the repository: the build context, nothing else.
CONTEXT_FILES = ("Dockerfile", "pyproject.toml", "README.md", "workspace.yaml", "ultra_ops.toml", "dagster.yaml")
CONTEXT_DIRS = ("ultra_ops", "deploy")
# `pip install .` builds ultra_ops itself in an isolated environment: its build backend comes from the wheelhouse too.
BUILD_BACKEND = ("setuptools>=68", "wheel")
_BUILD_S = 1200.0


def _context_paths() -> list[Path]:
    paths = [REPO / name for name in CONTEXT_FILES]
    for folder in CONTEXT_DIRS:
        paths += [
            p for p in (REPO / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    return sorted(paths)


def _python_alias() -> str:
    return next(r.alias for r in RECIPES if r.name == "python")


def image_digest() -> str:
    """sha256 over the build context (names and contents) and the base image's id."""
    h = hashlib.sha256(docker("image", "inspect", "--format", "{{.Id}}", _python_alias()).strip().encode())
    for path in _context_paths():
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def ensure_platform_image(log: Callable[[str], None] = lambda _: None) -> str:
    """The ultra_ops image for this checkout, built once; returns its content tag (also tagged ALIAS)."""
    ensure_images(log)
    image = f"{IMAGE_NAME}:{image_digest()}"
    if not image_exists(image):
        log(f"building {image} from the repository's Dockerfile on {_python_alias()}")
        try:
            _build(image, log)
        except CommandFailed as exc:
            raise OperationError(f"building the ultra_ops image {image} failed: {exc}") from None
    docker("tag", image, ALIAS)
    _drop_older(image, log)
    return image


def _drop_older(image: str, log: Callable[[str], None]) -> None:
    """Each build of a changed checkout is a new image of about 1 GB: keep only the current one
    (an older one still used by a container stays, and goes next time)."""
    for line in docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_NAME).split():
        if line not in (image, ALIAS) and not line.endswith(":<none>"):
            try:
                docker("rmi", line)
                log(f"removed the older {line}")
            except CommandFailed:
                pass


def _build(image: str, log: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="ultra-image-ultra_ops-") as tmp:
        context = Path(tmp)
        for path in _context_paths():
            dest = context / path.relative_to(REPO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        shutil.copytree(_wheelhouse(log), context / "wheelhouse")
        docker(
            "build",
            "--quiet",
            "--force-rm",
            "--build-arg",
            f"PYTHON_IMAGE={_python_alias()}",
            "--build-arg",
            "PIP_NO_INDEX=1",
            "--build-arg",
            "PIP_FIND_LINKS=/tmp/wheelhouse",
            "--label",
            "org.ultra-ops.recipe=ultra_ops",
            "-t",
            image,
            str(context),
            timeout=_BUILD_S,
        )


def _wheelhouse(log: Callable[[str], None]) -> Path:
    """Wheels of ultra_ops' dependencies and its build backend, made on the host with `pip wheel`,
    kept under var/images/wheelhouse keyed by pyproject.toml."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    cache = WHEELHOUSE / ("ultra_ops-" + hashlib.sha256(pyproject + "\0".join(BUILD_BACKEND).encode()).hexdigest()[:16])
    if (cache / ".complete").is_file():
        return cache
    log(f"making the wheelhouse {cache} (pip wheel on the host)")
    cache.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    with tempfile.TemporaryDirectory(prefix="ultra-wheel-src-") as tmp:
        # Only what pip needs to read ultra_ops' metadata: the wheelhouse follows pyproject.toml, not the code.
        shutil.copy2(REPO / "pyproject.toml", Path(tmp) / "pyproject.toml")
        shutil.copy2(REPO / "README.md", Path(tmp) / "README.md")
        (Path(tmp) / "ultra_ops").mkdir()
        (Path(tmp) / "ultra_ops" / "__init__.py").write_text("")
        pip = [sys.executable, "-m", "pip"]
        shell.run([*pip, "wheel", "-q", "-w", str(cache), tmp], timeout=_BUILD_S, env=env)
        shell.run(
            [*pip, "download", "-q", "--only-binary=:all:", "-d", str(cache), *BUILD_BACKEND], timeout=_BUILD_S, env=env
        )
    # ultra_ops' own wheel from that stub is no use: the image builds it from the real source.
    for stale in cache.glob("ultra_ops-*.whl"):
        stale.unlink()
    (cache / ".complete").write_text("")
    return cache
