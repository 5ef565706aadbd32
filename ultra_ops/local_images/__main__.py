"""`python -m ultra_ops.local_images build|names`: build the local base images (once per recipe)."""

from __future__ import annotations

import sys

from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.local_images.images import RECIPES, ensure_images


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "build"
    if command == "names":
        for recipe in RECIPES:
            print(f"{recipe.variable}={recipe.alias}")
        return 0
    if command != "build":
        print("usage: python -m ultra_ops.local_images [build|names]", file=sys.stderr)
        return 2
    try:
        for line in ensure_images(log=lambda line: print(f"ultra-ops setup: {line}", file=sys.stderr)):
            print(line)
    except UltraOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
