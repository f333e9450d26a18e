"""Episodes of the synthetic world: a scene, one action done in it, the instruction, frames and ground truth.

`generate_episode(seed, regime, split, size, num_frames)` is deterministic: the same arguments give the same
episode, and the same (seed, split) gives the same scene and action in both camera regimes and at every size.

Train/test split: the test split holds out some (action, target colour) combinations (`HELD_OUT_COMBOS`, never
seen in training) and some phrasings (`PHRASINGS[action]["paraphrase"]` and `["unseen_verb"]`, only in test).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .phrasings import PHRASINGS
from .layout import (REFERENCE_KIND, build_scene, colours_for, fits_table, footprint, objects_except, overlaps,
                     set_lid_off)
from .scene import SceneState, interpolate_states, render_view

ACTION_TYPES: tuple[str, ...] = (
    "put_in", "put_on", "move_left", "move_right", "push", "pick_up",
    "open_drawer", "close_drawer", "open_door", "close_door",
    "lid_off", "lid_on", "stack", "flip", "cut", "pour",
)
REGIMES = ("fixed", "head")
SPLITS = ("train", "test")
PHRASING_KINDS = ("template", "paraphrase", "unseen_verb")

# (action, colour of the acted-on object) pairs that only ever occur in the test split.
HELD_OUT_COMBOS: dict[str, str] = {
    "put_in": "green", "put_on": "red", "move_left": "blue", "move_right": "yellow", "push": "purple",
    "pick_up": "orange", "open_drawer": "green", "close_drawer": "blue", "open_door": "red", "close_door": "yellow",
    "lid_off": "purple", "lid_on": "orange", "stack": "blue", "flip": "green", "cut": "yellow", "pour": "red",
}

NOUNS: dict[str, list[str]] = {
    "cup": ["cup", "mug"], "bowl": ["bowl"], "plate": ["plate", "dish"], "block": ["block", "cube"],
    "apple": ["apple"], "pepper": ["pepper", "bell pepper"], "pot": ["pot", "saucepan"], "jug": ["jug", "pitcher"],
    "card": ["card"], "drawer": ["drawer"], "door": ["cupboard", "cupboard door", "cabinet door"],
}
TARGET_KINDS: dict[str, tuple[str, ...]] = {
    "put_in": ("block", "apple", "pepper"), "put_on": ("cup", "apple", "block", "pepper"),
    "move_left": ("cup", "bowl", "block", "apple", "jug", "pot"), "move_right": ("cup", "bowl", "block", "apple", "jug", "pot"),
    "push": ("cup", "bowl", "block", "apple", "jug", "pot"), "pick_up": ("cup", "block", "apple", "pepper", "jug"),
    "open_drawer": ("drawer",), "close_drawer": ("drawer",), "open_door": ("door",), "close_door": ("door",),
    "lid_off": ("pot",), "lid_on": ("pot",), "stack": ("block",), "flip": ("card",), "cut": ("apple", "pepper"),
    "pour": ("cup", "bowl"),
}


@dataclass
class Episode:
    """One action in one scene: frames from start to completion with ground truth.

    frames: RGB uint8 (height, width, 3); frames[0] is the start, frames[-1] the completed action.
    progress: true progress per frame in [0, 1], non-decreasing, 0 first and 1 last.
    phrasing: "template" (seen in training), "paraphrase" or "unseen_verb" (test only).
    states: ground-truth object states per frame (JSON-able dicts); cameras: (num_frames, 4) camera poses
    (tx, ty, rotation degrees, zoom), identity in the fixed regime.
    """

    seed: int
    regime: str
    split: str
    size: tuple[int, int]
    action: str
    instruction: str
    phrasing: str
    target: str
    target_kind: str
    target_colour: str
    reference: str
    held_out_combo: bool
    frames: list[np.ndarray]
    progress: np.ndarray
    states: list[dict]
    cameras: np.ndarray
    start_state: SceneState = field(repr=False)
    end_state: SceneState = field(repr=False)

    @property
    def episode_id(self) -> str:
        return f"{self.split}-{self.regime}-{self.seed:06d}"

    def render(self, state: SceneState, camera: np.ndarray | None = None, size: tuple[int, int] | None = None):
        """Render any state of this episode's scene (e.g. an alternative end state) at this episode's size."""
        return render_view(state, size or self.size, camera)

Keyframes = list[tuple[float, SceneState]]


def plan_action(state: SceneState, action: str, target: str, reference: str, rng: np.random.Generator) -> Keyframes | None:
    """Keyframes (progress, state) of doing `action` to `target` (with `reference`), or None if it cannot be done."""
    t = state.get(target)
    ref = state.get(reference) if reference else None
    start = state.copy()
    if action in ("move_left", "move_right", "push"):
        for _ in range(10):
            if action == "push":
                dx, dy = rng.uniform(-0.03, 0.03), -rng.uniform(0.13, 0.18)
            else:
                dx, dy = (-1 if action == "move_left" else 1) * rng.uniform(0.2, 0.3), rng.uniform(-0.02, 0.02)
            x, y = t.x + dx, t.y + dy
            if fits_table(x, y, footprint(t)) and not overlaps(x, y, footprint(t), objects_except(state, target)):
                mid = state.replace(target, x=t.x + dx / 2, y=t.y + dy / 2, lift=0.08)
                return [(0.0, start), (0.5, mid), (1.0, state.replace(target, x=x, y=y))]
        return None
    if action == "pick_up":
        x, y = 0.5 + rng.uniform(-0.12, 0.12), 0.78
        return [(0.0, start), (1.0, state.replace(target, x=x, y=y, lift=1.0, hand=1.0))]
    if action in ("put_in", "put_on", "stack"):
        if t.kind == "pot" or t.lift > 0 or ref.lift > 0:
            return None
        dy = -ref.r * 0.55 if action == "stack" else 0.0
        x, y = ref.x, ref.y + dy
        z = ref.z + 1
        mid = state.replace(target, x=(t.x + x) / 2, y=(t.y + y) / 2 - 0.05, lift=0.35, z=z)
        return [(0.0, start), (0.5, mid), (1.0, state.replace(target, x=x, y=y, z=z))]
    if action in ("open_drawer", "open_door", "close_drawer", "close_door"):
        want = 1.0 if action.startswith("open") else 0.0
        if t.open == want:
            return None
        return [(0.0, start), (1.0, state.replace(target, open=want))]
    if action in ("lid_off", "lid_on"):
        if t.kind != "pot":
            return None
        if action == "lid_off":
            if t.lid < 1:
                return None
            for side in ((1.0, -1.0) if rng.random() < 0.5 else (-1.0, 1.0)):
                dx, dy = side * t.r * 2.3, 0.02
                lid_x, lid_y = t.x + dx, t.y + dy
                if fits_table(lid_x, lid_y, t.r * 0.9) and not overlaps(lid_x, lid_y, t.r * 0.9, objects_except(state, target)):
                    return [(0.0, state.replace(target, lid_dx=dx, lid_dy=dy)), (1.0, state.replace(target, lid=0.0, lid_dx=dx, lid_dy=dy))]
            return None
        if t.lid > 0:
            return None
        return [(0.0, start), (1.0, state.replace(target, lid=1.0))]
    if action == "flip":
        if t.kind != "card":
            return None
        lifted = state.replace(target, lift=0.2, flip=t.flip + 0.5)
        return [(0.0, start), (0.5, lifted), (1.0, state.replace(target, flip=1.0 - t.flip))]
    if action == "cut":
        if t.kind not in ("apple", "pepper") or t.cut > 0:
            return None
        return [(0.0, start), (0.5, start.copy()), (0.51, state.replace(target, cut=1.0, spread=0.0)),
                (1.0, state.replace(target, cut=1.0, spread=1.0))]
    if action == "pour":
        jug = ref
        if jug is None or jug.kind != "jug" or t.kind not in ("cup", "bowl") or t.fill > 0:
            return None
        order = (1.0, -1.0) if rng.random() < 0.5 else (-1.0, 1.0)
        for side in order:
            x = t.x + side * (t.r + jug.r * 1.4)
            y = t.y - 0.03
            if not (fits_table(x, y, jug.r) and not overlaps(x, y, jug.r * 1.1, objects_except(state, jug.name, target))):
                continue
            tilt = -side * 75.0
            s1 = state.replace(jug.name, x=x, y=y, lift=0.25)
            s2 = s1.replace(jug.name, tilt=tilt).replace(target, liquid=jug.liquid, fill=0.15)
            s3 = s2.replace(target, fill=1.0)
            s4 = s3.replace(jug.name, tilt=0.0, lift=0.0)
            start = state.replace(target, liquid=jug.liquid)
            return [(0.0, start), (0.4, s1.replace(target, liquid=jug.liquid)), (0.55, s2), (0.85, s3), (1.0, s4)]
        return None
    raise ValueError(f"unknown action {action!r}; expected one of {ACTION_TYPES}")


def state_at(keyframes: Keyframes, s: float) -> SceneState:
    """Interpolate keyframes at progress s."""
    for (s0, a), (s1, b) in zip(keyframes[:-1], keyframes[1:]):
        if s <= s1:
            return interpolate_states(a, b, (s - s0) / max(s1 - s0, 1e-9))
    return keyframes[-1][1].copy()


def grip_point(state: SceneState, action: str, target: str, reference: str) -> tuple[float, float]:
    """Where the hand is while doing the action."""
    t = state.get(target)
    if action in ("open_drawer", "close_drawer"):
        return t.x, t.y + 0.14 * t.open + 0.02
    if action in ("open_door", "close_door"):
        width = 2 * t.r * math.cos(t.open * math.radians(70))
        return (t.x + t.r if t.side > 0 else t.x - t.r) - t.side * width, t.y + 0.05
    if action in ("lid_off", "lid_on"):
        return t.x + (1 - t.lid) * t.lid_dx, t.y + (1 - t.lid) * t.lid_dy
    if action == "pour":
        j = state.get(reference)
        return j.x, j.y + 0.03
    if action == "pick_up":
        return t.x, t.y + t.r * (0.6 + 0.9 * t.lift)
    return t.x, t.y + 0.02


# ------------------------------------------------------------------------------------------------------ instructions
def _refer(rng, state: SceneState, name: str, force_colour: bool = False) -> str:
    o = state.get(name)
    same_kind = [p for p in state.objects if p.kind == o.kind and p.name != name]
    noun = str(rng.choice(NOUNS[o.kind]))
    if same_kind or force_colour or rng.random() < 0.6:
        return f"{o.colour} {noun}"
    return noun


def make_instruction(rng, state: SceneState, action: str, target: str, reference: str, phrasing: str) -> str:
    pattern = str(rng.choice(PHRASINGS[action][phrasing]))
    fields = {"x": _refer(rng, state, target)}
    if action == "pour":
        jug = state.get(reference)
        fields["liquid"] = jug.liquid
        fields["y"] = fields["x"]
    elif reference:
        fields["y"] = _refer(rng, state, reference)
    return pattern.format(**fields)


# ---------------------------------------------------------------------------------------------------------- episodes
def _smoothstep(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * (3 - 2 * u)


def _camera_path(rng, regime: str, n: int) -> np.ndarray:
    """(n, 4) camera poses (tx, ty, rot, zoom): identity when fixed; a smooth drift plus jitter for a head camera."""
    cams = np.zeros((n, 4))
    cams[:, 3] = 1.0
    if regime == "fixed":
        return cams
    start = np.array([rng.normal(0, 0.025), rng.normal(0, 0.02), rng.normal(0, 2.0), 1 + rng.normal(0, 0.02)])
    sign = lambda: float(rng.choice([-1.0, 1.0]))  # noqa: E731
    drift = np.array([sign() * rng.uniform(0.04, 0.08), sign() * rng.uniform(0.02, 0.05),
                      sign() * rng.uniform(2.0, 5.0), sign() * rng.uniform(0.03, 0.07)])
    jitter = rng.normal(0, 1, (n, 4)) * np.array([0.006, 0.006, 0.5, 0.006])
    for i in range(n):
        u = i / (n - 1)
        cams[i] = start + drift * _smoothstep(u) + jitter[i]
    return cams


def _with_hand(state: SceneState, action: str, target: str, reference: str, u: float) -> SceneState:
    """Place the hand for time u in [0, 1] of the action: it comes in, does the action and leaves again
    (after pick_up it keeps holding the thing); absent in the first and last frames otherwise."""
    gx, gy = grip_point(state, action, target, reference)
    rest = (0.25 + 0.5 * gx, 1.2)
    approach, retreat = _smoothstep(u / 0.2), _smoothstep((u - 0.85) / 0.15)
    if action == "pick_up":
        retreat = 0.0
    if retreat > 0:
        hx, hy = gx + (rest[0] - gx) * retreat, gy + (rest[1] - gy) * retreat
    else:
        hx, hy = rest[0] + (gx - rest[0]) * approach, rest[1] + (gy - rest[1]) * approach
    state.hand_x, state.hand_y = hx, hy
    state.hand_visible = 1.0 if (0 < u < 1 or (action == "pick_up" and u >= 1)) else 0.0
    return state


def end_state_of(start: SceneState, action: str, target: str, reference: str = "", seed: int = 0) -> SceneState | None:
    """The scene once `action` is done to `target` (None if it cannot be done there), hand placed as in a last frame."""
    keyframes = plan_action(start, action, target, reference, np.random.default_rng(seed))
    if keyframes is None:
        return None
    return _with_hand(keyframes[-1][1].copy(), action, target, reference, 1.0)


def possible_actions(start: SceneState) -> list[tuple[str, str, str]]:
    """Every (action, target, reference) that can be done in a scene - the alternatives a readout compares against."""
    out = []
    for action in ACTION_TYPES:
        ref_kind = REFERENCE_KIND.get(action)
        for t in start.objects:
            if t.kind not in TARGET_KINDS[action]:
                continue
            refs = [o.name for o in start.objects if o.kind == ref_kind and o.name != t.name] if ref_kind else [""]
            for ref in refs:
                if end_state_of(start, action, t.name, ref) is not None:
                    out.append((action, t.name, ref))
    return out


def _rng(seed: int, split: str, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), stream]))


def render_action(keyframes: Keyframes, action: str, target: str, reference: str, cams: np.ndarray,
                  size: tuple[int, int]) -> tuple[list[np.ndarray], list[dict], list[float], SceneState, SceneState]:
    """Frames of an action seen along camera path ``cams`` (one frame per pose): (frames, states, progress, start
    state, end state). The action runs from 20 % to 85 % of the clip; the hand comes in before and leaves after."""
    frames, states, progress = [], [], []
    num_frames = len(cams)
    for i in range(num_frames):
        u = i / (num_frames - 1)
        s = _smoothstep((u - 0.2) / 0.65)
        st = _with_hand(state_at(keyframes, s), action, target, reference, u)
        frames.append(render_view(st, size, cams[i]))
        states.append(st.describe())
        progress.append(s)
        if i == 0:
            start_state = st
        end_state = st
    return frames, states, progress, start_state, end_state


def generate_episode(seed: int = 0, regime: str = "fixed", split: str = "train", size: tuple[int, int] = (64, 64),
                     num_frames: int = 16) -> Episode:
    """One episode of the world, deterministic by its arguments (see the module docstring for the split)."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 (start and end), got {num_frames}")
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"size must be (width, height) of at least 8 pixels, got {size!r}")
    seed = int(seed)
    rng = _rng(seed, split, 0)
    action = str(rng.choice(ACTION_TYPES))
    held_out = split == "test" and rng.random() < 0.5
    phrasing = "template" if split == "train" else str(rng.choice(PHRASING_KINDS))
    built = None
    for _ in range(100):
        kinds = list(TARGET_KINDS[action])
        if held_out:
            kinds = [k for k in kinds if HELD_OUT_COMBOS[action] in colours_for(k)]
            kind = str(rng.choice(kinds))
            colour = HELD_OUT_COMBOS[action]
        else:
            kind = str(rng.choice(kinds))
            colour = str(rng.choice([c for c in colours_for(kind) if c != HELD_OUT_COMBOS[action]]))
        built = build_scene(rng, action, colour, kind)
        if built is None:
            continue
        state, target, reference = built
        t = state.get(target)
        # put the acted-on thing into the state the action needs
        if action in ("open_drawer", "open_door"):
            state = state.replace(target, open=0.0)
        elif action in ("close_drawer", "close_door"):
            state = state.replace(target, open=1.0)
        elif action == "lid_on":
            set_lid_off(rng, t, [])
            lid_x, lid_y = t.x + t.lid_dx, t.y + t.lid_dy
            if not fits_table(lid_x, lid_y, t.r * 0.9) or overlaps(lid_x, lid_y, t.r * 0.9, objects_except(state, target)):
                t.lid_dx = -t.lid_dx
                lid_x = t.x + t.lid_dx
                if not fits_table(lid_x, lid_y, t.r * 0.9) or overlaps(lid_x, lid_y, t.r * 0.9, objects_except(state, target)):
                    continue
        elif action == "flip":
            t.flip = float(rng.random() < 0.5)
        keyframes = plan_action(state, action, target, reference, rng)
        if keyframes is not None:
            break
    else:
        raise RuntimeError(f"could not build a scene for {action} (seed {seed}); this is a bug in the world")

    instruction = make_instruction(rng, state, action, target, reference, phrasing)
    cams = _camera_path(_rng(seed, split, 1 + REGIMES.index(regime)), regime, num_frames)
    frames, states, progress, start_state, end_state = render_action(keyframes, action, target, reference, cams, size)
    t = start_state.get(target)
    return Episode(
        seed=seed, regime=regime, split=split, size=(int(size[0]), int(size[1])), action=action,
        instruction=instruction, phrasing=phrasing, target=target, target_kind=t.kind, target_colour=t.colour,
        reference=reference, held_out_combo=held_out, frames=frames, progress=np.asarray(progress, np.float64),
        states=states, cameras=cams, start_state=start_state, end_state=end_state,
    )
