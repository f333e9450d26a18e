"""Where models come from: a user's directory, the embedded default, or (before one ships) a random placeholder."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .loading import packaged_default_model_dir

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("ACTEDIT_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "actedit_ros"))


def default_model_is_placeholder() -> bool:
    """True while no trained default model ships in the package (a random tiny model stands in)."""
    return not (packaged_default_model_dir() / "model_index.json").is_file()


def resolve_model_path(model_path: str | os.PathLike | None) -> Path:
    """The directory to load: ``model_path`` itself, or the embedded default when it is None or ""."""
    if model_path not in (None, ""):
        return Path(model_path).expanduser()
    if not default_model_is_placeholder():
        return packaged_default_model_dir()
    from .tiny import make_tiny_model

    placeholder = cache_dir() / "placeholder-random-model"
    if not (placeholder / "model_index.json").is_file():
        log.warning("no trained default model ships with this package; using a RANDOMLY INITIALISED tiny model "
                    "at %s (goal images will be noise-like)", placeholder)
        make_tiny_model(placeholder, seed=0)
    return placeholder
