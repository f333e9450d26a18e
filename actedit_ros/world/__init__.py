"""Synthetic egocentric action world: procedural tabletop scenes, actions, instructions, ground truth.

```python
from actedit_ros.world import generate_episode, Episode, ACTION_TYPES
ep = generate_episode(seed=0, regime="head", split="test", size=(320, 240), num_frames=16)
```
"""
from .episode import (
    ACTION_TYPES,
    HELD_OUT_COMBOS,
    PHRASING_KINDS,
    PHRASINGS,
    REGIMES,
    SPLITS,
    Episode,
    generate_episode,
)
from .scene import SceneState, render_view

__all__ = [
    "ACTION_TYPES", "HELD_OUT_COMBOS", "PHRASING_KINDS", "PHRASINGS", "REGIMES", "SPLITS",
    "Episode", "generate_episode", "SceneState", "render_view",
]
