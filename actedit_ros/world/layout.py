"""Scene layout of the synthetic world: fixtures, the objects an action needs and distractors, placed on the table
without overlaps. `episode.py` builds episodes on it; what a seed produces depends on the order of the random draws
here, so a change must keep that order for every existing seed."""
from __future__ import annotations

import math

import numpy as np

from .scene import COLOURS, LIQUIDS, Obj, SceneState, TABLE_RGB, WALL_RGB

KIND_COLOURS: dict[str, tuple[str, ...]] = {
    "apple": ("red", "green", "yellow"),
    "pepper": ("red", "green", "yellow", "orange"),
}
RADIUS: dict[str, tuple[float, float]] = {  # radius range per kind, in view widths
    "cup": (0.085, 0.105), "bowl": (0.13, 0.15), "plate": (0.14, 0.16), "block": (0.075, 0.09),
    "apple": (0.075, 0.09), "pepper": (0.075, 0.09), "pot": (0.105, 0.12), "jug": (0.075, 0.085), "card": (0.085, 0.1),
}
FOOTPRINT = {"cup": 1.3, "pot": 1.4, "jug": 1.3, "apple": 1.6, "pepper": 1.6}  # clearance factor on the radius
REFERENCE_KIND = {"put_in": "bowl", "put_on": "plate", "stack": "block", "pour": "jug"}
TABLE_BOX = (0.04, 0.96, 0.47, 0.98)  # x0, x1, y0, y1 where table objects may stand


def footprint(o: Obj) -> float:
    return o.r * FOOTPRINT.get(o.kind, 1.0)


def overlaps(x: float, y: float, rad: float, others: list[Obj], gap: float = 0.025) -> bool:
    for o in others:
        if o.kind in ("drawer", "door"):
            continue
        d = math.hypot(x - o.x, (y - o.y) / 0.8)
        if d < rad + footprint(o) + gap:
            return True
    return False


def _free_spot(rng: np.random.Generator, rad: float, others: list[Obj], tries: int = 60) -> tuple[float, float] | None:
    x0, x1, y0, y1 = TABLE_BOX
    for _ in range(tries):
        x = rng.uniform(x0 + rad, x1 - rad)
        y = rng.uniform(y0 + rad * 0.8, y1 - rad * 0.8)
        if not overlaps(x, y, rad, others):
            return x, y
    return None


def fits_table(x: float, y: float, rad: float) -> bool:
    x0, x1, y0, y1 = TABLE_BOX
    return x0 + rad <= x <= x1 - rad and y0 + rad * 0.8 <= y <= y1 - rad * 0.8


def _new_obj(rng, name, kind, colour) -> Obj:
    lo, hi = RADIUS[kind]
    o = Obj(name=name, kind=kind, colour=colour, x=0.0, y=0.0, r=float(rng.uniform(lo, hi)))
    if kind == "jug":
        o.liquid = str(rng.choice(list(LIQUIDS)))
    if kind in ("cup", "bowl"):
        o.liquid = "water"
    return o


def colours_for(kind: str) -> tuple[str, ...]:
    return KIND_COLOURS.get(kind, tuple(COLOURS))


def _fixtures(rng, action: str, target_colour: str | None) -> tuple[list[Obj], tuple[float, float, float, float]]:
    """Wall cupboard door(s) and the drawer chest; the acted-on fixture gets target_colour."""
    objs: list[Obj] = []
    chest_left = rng.random() < 0.5
    cw = rng.uniform(0.34, 0.44)
    cx0 = rng.uniform(0.04, 0.12) if chest_left else rng.uniform(0.88 - cw, 0.96 - cw)
    chest = (cx0, 0.15, cx0 + cw, 0.33)
    n_drawers = 2 if rng.random() < 0.5 else 1
    n_doors = 2 if rng.random() < 0.5 else 1
    for kind, n in (("drawer", n_drawers), ("door", n_doors)):
        palette = list(COLOURS)
        if kind in action and target_colour is not None:
            palette.remove(target_colour)
            colours = [target_colour] + list(rng.choice(palette, n - 1, replace=False))
        else:
            colours = list(rng.choice(palette, n, replace=False))
        for i, colour in enumerate(colours):
            if kind == "drawer":
                half = (cw - 0.04) / (2 * n)
                x = cx0 + 0.02 + half * (2 * i + 1)
                o = Obj(f"drawer{i}", "drawer", str(colour), x=x, y=0.26, r=half - 0.01, h=0.09)
            else:
                span = (0.5, 0.92) if chest_left else (0.08, 0.5)
                width = (span[1] - span[0]) / n
                r = min(0.12, width / 2 - 0.03)
                x = span[0] + width * (i + 0.5) + rng.uniform(-0.02, 0.02)
                o = Obj(f"door{i}", "door", str(colour), x=x, y=0.045, r=r, h=0.15, side=float(rng.choice([-1.0, 1.0])))
            o.open = 1.0 if rng.random() < 0.3 else 0.0
            objs.append(o)
    # the acted-on fixture is the first of its kind; shuffle which one that is by permuting positions
    return objs, chest


def _place(rng, obj: Obj, objs: list[Obj]) -> bool:
    spot = _free_spot(rng, footprint(obj), objs)
    if spot is None:
        return False
    obj.x, obj.y = spot
    objs.append(obj)
    return True


def build_scene(rng, action: str, colour: str, target_kind: str) -> tuple[SceneState, str, str] | None:
    """A random scene in which `action` can be done to a `colour` `target_kind`; returns (state, target, reference)."""
    fixture_action = target_kind in ("drawer", "door")
    fixtures, chest = _fixtures(rng, action, colour if fixture_action else None)
    objs: list[Obj] = list(fixtures)
    if fixture_action:
        target = next(o for o in fixtures if o.kind == target_kind)
        # randomise which of the fixtures is the target by swapping positions with another of its kind
        same = [o for o in fixtures if o.kind == target_kind and o is not target]
        if same and rng.random() < 0.5:
            other = same[0]
            target.x, other.x, target.side, other.side = other.x, target.x, other.side, target.side
    else:
        target = _new_obj(rng, "target", target_kind, colour)
        if not _place(rng, target, objs):
            return None
    reference = ""
    ref_kind = REFERENCE_KIND.get(action)
    if ref_kind:
        ref_colours = [c for c in colours_for(ref_kind) if not (ref_kind == target_kind and c == colour)]
        ref = _new_obj(rng, "reference", ref_kind, str(rng.choice(ref_colours)))
        if not _place(rng, ref, objs):
            return None
        reference = ref.name
    # distractors: another thing of the target's kind in a different colour (the hard case), then random others
    n_table = 1 + bool(ref_kind)
    if not fixture_action and rng.random() < 0.6:
        others = [c for c in colours_for(target_kind) if c != colour]
        if ref_kind == target_kind:
            others = [c for c in others if c != objs[-1].colour]
        if others:
            d = _new_obj(rng, "distractor0", target_kind, str(rng.choice(others)))
            n_table += _place(rng, d, objs)
    if ref_kind and ref_kind != target_kind and rng.random() < 0.3:
        ref_obj = objs[-1] if objs[-1].name == "reference" else next(o for o in objs if o.name == "reference")
        others = [c for c in colours_for(ref_kind) if c != ref_obj.colour]
        d = _new_obj(rng, "distractor1", ref_kind, str(rng.choice(others)))
        n_table += _place(rng, d, objs)
    extra_kinds = ("cup", "bowl", "plate", "block", "apple", "pot", "jug", "card")
    for i in range(int(rng.integers(0, 3))):
        if n_table >= 4:
            break
        kind = str(rng.choice(extra_kinds))
        d = _new_obj(rng, f"other{i}", kind, str(rng.choice(colours_for(kind))))
        if kind == "card":
            d.flip = float(rng.random() < 0.5)
        if kind == "pot" and rng.random() < 0.3:
            set_lid_off(rng, d, objs)
        n_table += _place(rng, d, objs)
    table_rgb = tuple(int(c) for c in np.clip(np.array(TABLE_RGB) + rng.integers(-10, 11, 3), 0, 255))
    wall_rgb = tuple(int(c) for c in np.clip(np.array(WALL_RGB) + rng.integers(-10, 11, 3), 0, 255))
    state = SceneState(objects=objs, table_rgb=table_rgb, wall_rgb=wall_rgb, chest=chest)
    return state, target.name, reference


def set_lid_off(rng, pot: Obj, others: list[Obj]) -> None:
    side = float(rng.choice([-1.0, 1.0]))
    pot.lid, pot.lid_dx, pot.lid_dy = 0.0, side * pot.r * 2.3, 0.02


# ----------------------------------------------------------------------------------------------------------- actions


def objects_except(state: SceneState, *names: str) -> list[Obj]:
    return [o for o in state.objects if o.name not in names]
