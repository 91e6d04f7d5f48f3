"""The node agent's image table: images are not pulled, each of this project's images maps to the command that
runs it in the current Python environment. Any other image is refused with :class:`UnknownImageError`."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

# Image name (any registry-free name, any tag or digest) -> its entrypoint, as the Dockerfiles will set it.
IMAGE_ENTRYPOINTS: dict[str, tuple[str, ...]] = {
    "warmserve/operator": ("warmserve",),
    "warmserve/gateway": ("warmserve",),
    "warmserve/worker": ("warmserve",),
}


class UnknownImageError(ValueError):
    """The image is not in :data:`IMAGE_ENTRYPOINTS`; the message names it and the known ones."""


def image_name(image: str) -> str:
    """``warmserve/worker:0.1`` or ``warmserve/worker@sha256:...`` -> ``warmserve/worker``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def local_argv(image: str, command: Sequence[str] | None, args: Sequence[str] | None) -> list[str]:
    """The argv a container runs: its ``command`` (else the image's entrypoint) and ``args``, with the
    program found in this interpreter's environment (``python``/``python3`` is this interpreter)."""
    name = image_name(image)
    if name not in IMAGE_ENTRYPOINTS:
        known = ", ".join(sorted(IMAGE_ENTRYPOINTS))
        raise UnknownImageError(f"image {image!r} is not in the node agent's image table (known: {known})")
    argv = [*(command or IMAGE_ENTRYPOINTS[name]), *(args or ())]
    return [_program(argv[0]), *argv[1:]]


def _program(program: str) -> str:
    if program in ("python", "python3"):
        return sys.executable
    beside = Path(sys.executable).parent / program
    if "/" not in program and beside.exists():
        return str(beside)
    return shutil.which(program) or program
