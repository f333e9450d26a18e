"""Negatives for progress evaluation and training: the same start scene with a *different* action done in it.

A progress signal toward "put the apple in the bowl" must stay low while the camera watches somebody open the drawer
instead. ``other_action(episode, k)`` renders the k-th such alternative: same scene, same camera path, same number of
frames, another (action, target, reference) that the scene allows. It draws on its own seed stream, so the episodes
of every existing seed are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .episode import Episode, _rng, plan_action, possible_actions, render_action

NEGATIVE_STREAM = 100  # seed stream of the alternatives (streams 0-2 belong to generate_episode)


@dataclass
class OtherAction:
    """Frames of a different action from the same start: ``frames[0]`` is the episode's start view."""

    action: str
    target: str
    reference: str
    frames: list[np.ndarray]


def other_action(episode: Episode, k: int = 0) -> OtherAction:
    """The k-th alternative action (k >= 0) done from ``episode``'s start, seen by its camera path.

    Raises ValueError when the scene allows no other action (never the case in the world's scenes).
    """
    start = episode.start_state.copy()
    start.hand_visible = 0.0
    true = (episode.action, episode.target, episode.reference)
    choices = [c for c in possible_actions(start) if c != true and c[1] != episode.target]
    if not choices:  # fall back to other actions on the same object
        choices = [c for c in possible_actions(start) if c != true]
    if not choices:
        raise ValueError(f"episode {episode.episode_id}: the scene allows no action other than {episode.action}")
    rng = _rng(episode.seed, episode.split, NEGATIVE_STREAM + int(k))
    order = rng.permutation(len(choices))
    for index in order:
        action, target, reference = choices[int(index)]
        keyframes = plan_action(start, action, target, reference, rng)
        if keyframes is not None:
            frames = render_action(keyframes, action, target, reference, episode.cameras, episode.size)[0]
            return OtherAction(action, target, reference, frames)
    raise ValueError(f"episode {episode.episode_id}: no alternative action could be planned")
