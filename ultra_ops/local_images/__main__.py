"""`python -m ultra_ops.local_images build|platform|host|names`: build the local base images (once per
recipe), with `platform` the ultra_ops image from the repository's Dockerfile on them, with `host`
the test host image (sshd and a Docker engine of its own)."""

from __future__ import annotations

import sys

from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.local_images.images import HOST_RECIPE, RECIPES, ensure_images


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "build"
    if command == "names":
        for recipe in RECIPES:
            print(f"{recipe.variable}={recipe.alias}")
        return 0
    if command not in ("build", "platform", "host"):
        print("usage: python -m ultra_ops.local_images [build|platform|host|names]", file=sys.stderr)
        return 2
    log = lambda line: print(f"ultra-ops setup: {line}", file=sys.stderr)  # noqa: E731
    try:
        for line in ensure_images(log=log, recipes=(HOST_RECIPE,) if command == "host" else RECIPES):
            print(line)
        if command == "platform":
            from ultra_ops.local_images.platform import ensure_platform_image

            print(f"ULTRA_OPS_IMAGE={ensure_platform_image(log=log)}")
    except UltraOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
