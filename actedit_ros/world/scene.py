"""Scene state and rendering of the synthetic egocentric tabletop world.

The world lives in normalised coordinates: x in [0, 1] left to right, y in [0, 1] top to bottom of the view of an
un-moved camera (a wall band at the top, the table below). Everything is drawn with anti-aliased OpenCV primitives
on a supersampled canvas that also covers a margin around the view, so a moving (head) camera never sees an edge;
the camera is an affine warp of that canvas, and the result is area-downsampled to the requested size.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# Saturated colours that stay distinct at 64x64 (RGB).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 85, 215),
    "yellow": (240, 205, 30),
    "orange": (245, 130, 20),
    "purple": (135, 55, 185),
}
LIQUIDS: dict[str, tuple[int, int, int]] = {
    "milk": (248, 248, 240),
    "juice": (250, 160, 30),
    "water": (120, 190, 250),
    "coffee": (95, 55, 30),
}
WALL_RGB = (205, 200, 190)
TABLE_RGB = (196, 160, 118)
CHEST_RGB = (150, 110, 80)
SKIN_RGB = (230, 180, 145)
SLEEVE_RGB = (70, 80, 95)
WALL_BOTTOM = 0.2  # y of the back edge of the table
VIEW_MARGIN = 0.15  # world drawn beyond the view on every side (room for the head camera)
FORESHORTEN = 0.8  # vertical squash of round things: the camera looks down at an angle


@dataclass
class Obj:
    """One thing in the scene. Every state field is a float so two states can be interpolated.

    kind: cup, bowl, plate, block, apple, pepper, pot, jug, card, drawer, door.
    x, y: centre (for drawer/door: centre of the front panel); r: radius (half width), in view widths.
    z: drawing layer (things put in/on other things are drawn above them); lift: 0 on the table, 1 held up close.
    open: drawer/door opening; lid: 1 on the pot, 0 off (lid_dx, lid_dy: where the lid goes when off);
    flip: card 0 face up, 1 face down; cut: 0 whole, 1 in pieces (spread: how far apart);
    fill: how full a cup/bowl is with `liquid`; tilt: jug tilt in degrees; hand: 1 = the hand holds it.
    """

    name: str
    kind: str
    colour: str
    x: float
    y: float
    r: float
    z: float = 0.0
    lift: float = 0.0
    open: float = 0.0
    lid: float = 1.0
    lid_dx: float = 0.0
    lid_dy: float = 0.0
    flip: float = 0.0
    cut: float = 0.0
    spread: float = 0.0
    fill: float = 0.0
    tilt: float = 0.0
    hand: float = 0.0
    h: float = 0.0  # drawer/door panel height
    side: float = 1.0  # door hinge side (-1 left, +1 right)
    liquid: str = ""

    def copy(self, **changes) -> "Obj":
        return dataclasses.replace(self, **changes)


@dataclass
class SceneState:
    """All objects of a scene at one instant, plus where the hand is (hand_visible 0 = no hand)."""

    objects: list[Obj]
    hand_x: float = 0.5
    hand_y: float = 1.2
    hand_visible: float = 0.0
    table_rgb: tuple[int, int, int] = TABLE_RGB
    wall_rgb: tuple[int, int, int] = WALL_RGB
    chest: tuple[float, float, float, float] = (0.3, 0.16, 0.7, 0.36)  # x0, y0, x1, y1 of the drawer chest
    extra: dict = field(default_factory=dict)

    def get(self, name: str) -> Obj:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(f"no object named {name!r} in the scene")

    def replace(self, name: str, **changes) -> "SceneState":
        """A copy of the state with one object's fields changed."""
        objects = [o.copy(**changes) if o.name == name else o.copy() for o in self.objects]
        return dataclasses.replace(self, objects=objects)

    def copy(self) -> "SceneState":
        return dataclasses.replace(self, objects=[o.copy() for o in self.objects])

    def describe(self) -> dict:
        """Ground-truth object states as plain JSON-able data."""
        return {
            "objects": [dataclasses.asdict(o) for o in self.objects],
            "hand": {"x": self.hand_x, "y": self.hand_y, "visible": self.hand_visible},
        }


def interpolate_states(a: SceneState, b: SceneState, s: float) -> SceneState:
    """Linear interpolation of every float field of every object (objects matched by name)."""
    s = float(np.clip(s, 0.0, 1.0))
    objects = []
    for oa in a.objects:
        ob = b.get(oa.name)
        changes = {}
        for f in dataclasses.fields(Obj):
            va, vb = getattr(oa, f.name), getattr(ob, f.name)
            if isinstance(va, float) and va != vb:
                changes[f.name] = va + (vb - va) * s
            elif not isinstance(va, float) and va != vb:
                changes[f.name] = va if s < 0.5 else vb
        objects.append(oa.copy(**changes))
    lerp = lambda u, v: u + (v - u) * s  # noqa: E731
    return dataclasses.replace(
        a,
        objects=objects,
        hand_x=lerp(a.hand_x, b.hand_x),
        hand_y=lerp(a.hand_y, b.hand_y),
        hand_visible=lerp(a.hand_visible, b.hand_visible),
    )


# ----------------------------------------------------------------------------------------------------------- drawing
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


def _shade(rgb, k: float) -> tuple[int, int, int]:
    """Darker (k < 1) or lighter (k > 1, towards white) version of a colour."""
    if k <= 1:
        return tuple(int(c * k) for c in rgb)
    return tuple(int(c + (255 - c) * (k - 1)) for c in rgb)


class _Painter:
    """Draws in world coordinates onto a supersampled canvas (anti-aliased, sub-pixel precise)."""

    def __init__(self, width_px: int, height_px: int):
        m = VIEW_MARGIN
        self.sx, self.sy = float(width_px), float(height_px)  # pixels per world unit
        self.w = int(round(width_px * (1 + 2 * m)))
        self.h = int(round(height_px * (1 + 2 * m)))
        self.canvas = np.zeros((self.h, self.w, 3), np.uint8)
        self.table = TABLE_RGB  # for shadows

    def pt(self, x: float, y: float) -> tuple[int, int]:
        m = VIEW_MARGIN
        return int(round((x + m) * self.sx * _ONE)), int(round((y + m) * self.sy * _ONE))

    def axes(self, rx: float, ry: float) -> tuple[int, int]:
        return max(1, int(round(rx * self.sx * _ONE))), max(1, int(round(ry * self.sy * _ONE)))

    def ellipse(self, x, y, rx, ry, rgb, angle=0.0, start=0, end=360, thickness=-1):
        t = thickness if thickness < 0 else max(1, int(round(thickness * self.sx)))
        cv2.ellipse(self.canvas, self.pt(x, y), self.axes(rx, ry), angle, start, end, rgb, t, cv2.LINE_AA, _SHIFT)

    def disc(self, x, y, r, rgb, thickness=-1):
        """A round thing lying on the table (foreshortened into an ellipse)."""
        self.ellipse(x, y, r, r * FORESHORTEN, rgb, thickness=thickness)

    def poly(self, pts, rgb, thickness=-1):
        arr = np.array([self.pt(x, y) for x, y in pts], np.int32).reshape(-1, 1, 2)
        if thickness < 0:
            cv2.fillPoly(self.canvas, [arr], rgb, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(self.canvas, [arr], True, rgb, max(1, int(round(thickness * self.sx))), cv2.LINE_AA, _SHIFT)

    def rect(self, x0, y0, x1, y1, rgb, thickness=-1):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], rgb, thickness)

    def line(self, x0, y0, x1, y1, rgb, width):
        cv2.line(self.canvas, self.pt(x0, y0), self.pt(x1, y1), rgb, max(1, int(round(width * self.sx))), cv2.LINE_AA, _SHIFT)


def _rotated_rect(x, y, hw, hh, angle_deg, aspect):
    """Corners of a rectangle (half sizes hw, hh in view widths) rotated in the image plane."""
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    pts = []
    for dx, dy in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)):
        px, py = dx * ca - dy * sa, dx * sa + dy * ca
        pts.append((x + px, y + py * aspect))
    return pts


def _draw_background(p: _Painter, state: SceneState) -> None:
    m = VIEW_MARGIN
    p.canvas[:] = state.table_rgb
    p.rect(-m, -m, 1 + m, WALL_BOTTOM, state.wall_rgb)
    p.rect(-m, WALL_BOTTOM - 0.012, 1 + m, WALL_BOTTOM + 0.004, _shade(state.table_rgb, 0.75))  # table edge
    x0, y0, x1, y1 = state.chest
    p.rect(x0 + 0.01, y1 - 0.005, x1 + 0.01, y1 + 0.025, _shade(state.table_rgb, 0.8))  # chest shadow
    p.rect(x0, y0, x1, y1, CHEST_RGB)
    p.rect(x0, y0, x1, y0 + 0.035, _shade(CHEST_RGB, 1.25))  # chest top


def _draw_door(p: _Painter, o: Obj) -> None:
    x0, x1 = o.x - o.r, o.x + o.r
    y0, y1 = o.y - o.h / 2, o.y + o.h / 2
    rgb = COLOURS[o.colour]
    p.rect(x0 - 0.012, y0 - 0.012, x1 + 0.012, y1 + 0.012, _shade(WALL_RGB, 0.7))  # frame
    if o.open > 0.02:
        p.rect(x0, y0, x1, y1, (45, 35, 30))  # dark interior
        p.rect(x0, o.y + 0.005, x1, o.y + 0.015, (120, 100, 80))  # shelf
    width = 2 * o.r * math.cos(o.open * math.radians(70))
    hinge = x1 if o.side > 0 else x0
    free = hinge - o.side * width
    bulge = 0.05 * math.sin(o.open * math.radians(70))  # the swinging edge comes towards the camera
    pts = [(hinge, y0), (free, y0 - bulge * 0.5), (free, y1 + bulge), (hinge, y1)]
    p.poly(pts, rgb)
    p.poly(pts, _shade(rgb, 0.6), thickness=0.006)
    if width > 0.03:
        hx = free + o.side * min(0.03, width * 0.3)
        p.line(hx, o.y - 0.025, hx, o.y + 0.025, (235, 235, 235), 0.012)


def _draw_drawer(p: _Painter, o: Obj) -> None:
    rgb = COLOURS[o.colour]
    x0, x1 = o.x - o.r, o.x + o.r
    pull = 0.14 * o.open
    y0, y1 = o.y - o.h / 2, o.y + o.h / 2
    if pull > 0.005:
        # the tray seen from above: side walls and a dark inside between the chest and the pulled front
        p.rect(x0, y0, x1, y1 + pull, _shade(rgb, 0.55))
        p.rect(x0 + 0.015, y0 + 0.01, x1 - 0.015, y1 + pull - 0.01, (60, 45, 35))
    p.rect(x0, y0 + pull, x1, y1 + pull, rgb)
    p.rect(x0, y0 + pull, x1, y1 + pull, _shade(rgb, 0.6), thickness=0.006)
    p.line(o.x - 0.035, o.y + pull, o.x + 0.035, o.y + pull, (235, 235, 235), 0.012)


def _draw_shadow(p: _Painter, o: Obj, r: float) -> None:
    off = 0.012 + 0.05 * o.lift
    p.disc(o.x + off, o.y + off, r * (1 + 0.2 * o.lift), _shade(p.table, 0.72))


def _draw_round_object(p: _Painter, o: Obj) -> None:
    rgb = COLOURS[o.colour]
    scale = 1 + 0.7 * o.lift
    r = o.r * scale
    x, y = o.x, o.y
    _draw_shadow(p, o, r)
    if o.kind == "cup":
        p.line(x + r * 0.8, y, x + r * 1.35, y, _shade(rgb, 0.8), r * 0.35)  # handle
        p.disc(x, y, r, rgb)
        p.disc(x, y, r * 0.75, _shade(rgb, 0.55))
        if o.fill > 0.02:
            p.disc(x, y, r * 0.72 * min(1.0, 0.4 + 0.6 * o.fill), LIQUIDS[o.liquid])
    elif o.kind == "bowl":
        p.disc(x, y, r, _shade(rgb, 0.8))
        p.disc(x, y, r * 0.82, _shade(rgb, 1.35))
        if o.fill > 0.02:
            p.disc(x, y, r * 0.8 * min(1.0, 0.4 + 0.6 * o.fill), LIQUIDS[o.liquid])
    elif o.kind == "plate":
        p.disc(x, y, r, (240, 240, 236))
        p.disc(x, y, r, rgb, thickness=r * 0.18)
        p.disc(x, y, r * 0.62, (228, 228, 222))
    elif o.kind == "pot":
        p.line(x - r * 1.3, y, x + r * 1.3, y, (60, 60, 60), r * 0.22)  # handles
        p.disc(x, y, r, rgb)
        p.disc(x, y, r * 0.82, (50, 45, 45))  # inside (visible when the lid is off)
        lx, ly = x + (1 - o.lid) * o.lid_dx, y + (1 - o.lid) * o.lid_dy
        lift = math.sin(math.pi * float(np.clip(o.lid, 0, 1)))  # lid raised while it travels
        lr = r * 0.9 * (1 + 0.25 * lift)
        if o.lid < 0.98:
            p.disc(lx + 0.01, ly + 0.01, lr, _shade(p.table, 0.75))
        p.disc(lx, ly - 0.03 * lift, lr, _shade(rgb, 1.45))
        p.disc(lx, ly - 0.03 * lift, lr * 0.25, _shade(rgb, 0.6))  # knob
    elif o.kind in ("apple", "pepper"):
        _draw_fruit(p, o, r, rgb)


def _draw_fruit(p: _Painter, o: Obj, r: float, rgb) -> None:
    x, y = o.x, o.y
    if o.cut < 0.5:
        p.disc(x, y, r, rgb)
        p.disc(x - r * 0.35, y - r * 0.3, r * 0.25, _shade(rgb, 1.4))  # highlight
        if o.kind == "apple":
            p.line(x, y - r * 0.5, x + r * 0.15, y - r * 0.95, (90, 60, 30), r * 0.12)
            p.ellipse(x + r * 0.35, y - r * 0.8, r * 0.28, r * 0.12, (60, 150, 50), angle=-20)
        else:
            p.disc(x, y - r * 0.55, r * 0.28, (40, 120, 40))
        return
    # cut: four wedges pushed apart, cut faces (light flesh) up
    flesh = (245, 235, 200) if o.kind == "apple" else _shade(rgb, 1.5)
    d = r * (0.15 + 0.55 * o.spread)
    for k, ang in enumerate((45, 135, 225, 315)):
        a = math.radians(ang)
        cx, cy = x + d * math.cos(a), y + d * math.sin(a) * FORESHORTEN
        p.ellipse(cx, cy, r * 0.72, r * 0.72 * FORESHORTEN, rgb, angle=0, start=ang - 50, end=ang + 50)
        p.ellipse(cx, cy, r * 0.6, r * 0.6 * FORESHORTEN, flesh, angle=0, start=ang - 45, end=ang + 45)
        p.disc(cx, cy, r * 0.08, rgb)


def _draw_block(p: _Painter, o: Obj) -> None:
    rgb = COLOURS[o.colour]
    scale = 1 + 0.7 * o.lift
    r = o.r * scale
    x, y = o.x, o.y
    p.rect(x - r + 0.015 + 0.04 * o.lift, y - r * 0.6 + 0.02 + 0.04 * o.lift, x + r + 0.015 + 0.04 * o.lift,
           y + r * 0.95 + 0.02 + 0.04 * o.lift, _shade(p.table, 0.72))
    p.rect(x - r, y + r * 0.35, x + r, y + r * 0.95, _shade(rgb, 0.65))  # front face
    p.rect(x - r, y - r * 0.65, x + r, y + r * 0.35, rgb)  # top face
    p.rect(x - r, y - r * 0.65, x + r, y + r * 0.95, _shade(rgb, 0.5), thickness=0.005)


def _draw_card(p: _Painter, o: Obj) -> None:
    rgb = COLOURS[o.colour]
    scale = 1 + 0.7 * o.lift
    hw = o.r * scale * abs(math.cos(math.pi * o.flip))
    hh = o.r * scale * 0.75
    x, y = o.x, o.y
    p.rect(x - o.r * scale + 0.012, y - hh + 0.012, x + o.r * scale + 0.012, y + hh + 0.012, _shade(p.table, 0.75))
    if hw < 0.004:
        p.line(x, y - hh, x, y + hh, _shade(rgb, 0.5), 0.006)
        return
    if o.flip < 0.5:  # face up: coloured with a white star-ish mark
        p.rect(x - hw, y - hh, x + hw, y + hh, rgb)
        p.ellipse(x, y, hw * 0.45, hh * 0.45, (250, 250, 250))
    else:  # face down: white back with a coloured border and stripes
        p.rect(x - hw, y - hh, x + hw, y + hh, (245, 245, 240))
        p.rect(x - hw, y - hh, x + hw, y + hh, rgb, thickness=0.012)
        for k in (-0.4, 0.0, 0.4):
            p.line(x - hw * 0.7, y + k * hh, x + hw * 0.7, y + k * hh, _shade(rgb, 1.3), 0.008)


def _draw_jug(p: _Painter, o: Obj) -> None:
    rgb = COLOURS[o.colour]
    scale = 1 + 0.7 * o.lift
    r = o.r * scale
    aspect = 1.0  # rotate in normalised coordinates, like every other size in the world
    p.poly(_rotated_rect(o.x + 0.015, o.y + 0.02, r * 0.75, r * 1.1, o.tilt, aspect), _shade(p.table, 0.72))
    body = _rotated_rect(o.x, o.y, r * 0.75, r * 1.1, o.tilt, aspect)
    p.poly(body, rgb)
    inner = _rotated_rect(o.x, o.y, r * 0.5, r * 0.85, o.tilt, aspect)
    p.poly(inner, LIQUIDS[o.liquid])
    # spout at the top edge, handle at the bottom edge (rotating with the tilt)
    a = math.radians(o.tilt)
    sx, sy = o.x + (r * 1.25) * math.sin(a), o.y - (r * 1.25) * math.cos(a) * aspect
    p.disc(sx, sy, r * 0.28, _shade(rgb, 0.75))
    hx, hy = o.x - (r * 1.2) * math.sin(a), o.y + (r * 1.2) * math.cos(a) * aspect
    p.disc(hx, hy, r * 0.3, _shade(rgb, 0.6))


def _draw_hand(p: _Painter, state: SceneState) -> None:
    if state.hand_visible < 0.5:
        return
    x, y = state.hand_x, state.hand_y
    bx = 0.5 + (x - 0.5) * 0.35 + 0.12
    p.line(bx, 1.25, x + 0.02, y + 0.1, SLEEVE_RGB, 0.13)
    p.ellipse(x + 0.01, y + 0.035, 0.075, 0.085, _shade(SKIN_RGB, 0.85))
    p.ellipse(x, y + 0.025, 0.068, 0.078, SKIN_RGB)
    for k in (-0.036, -0.012, 0.012, 0.036):  # fingers
        p.line(x + k, y + 0.0, x + k * 1.2, y - 0.055, SKIN_RGB, 0.02)


_DRAWERS = {"cup": _draw_round_object, "bowl": _draw_round_object, "plate": _draw_round_object,
            "pot": _draw_round_object, "apple": _draw_round_object, "pepper": _draw_round_object,
            "block": _draw_block, "card": _draw_card, "jug": _draw_jug, "door": _draw_door, "drawer": _draw_drawer}


def draw_world(state: SceneState, width_px: int, height_px: int) -> np.ndarray:
    """The whole world (view plus margin) as an RGB canvas at `width_px` x `height_px` pixels per world unit."""
    p = _Painter(width_px, height_px)
    p.table = state.table_rgb
    _draw_background(p, state)
    fixtures = [o for o in state.objects if o.kind in ("door", "drawer")]
    movables = [o for o in state.objects if o.kind not in ("door", "drawer")]
    for o in fixtures:
        _DRAWERS[o.kind](p, o)
    order = sorted(movables, key=lambda o: (o.z + 10 * o.lift, o.y))
    for o in order:
        if o.hand < 0.5:
            _DRAWERS[o.kind](p, o)
    _draw_hand(p, state)
    for o in order:  # things held in the hand are drawn over it
        if o.hand >= 0.5:
            _DRAWERS[o.kind](p, o)
    return p.canvas


# ------------------------------------------------------------------------------------------------------------ camera
def camera_matrix(tx: float = 0.0, ty: float = 0.0, rot_deg: float = 0.0, zoom: float = 1.0) -> np.ndarray:
    """A camera pose as a 4-vector (tx, ty in view widths/heights, rotation in degrees, zoom); identity = fixed view."""
    return np.array([tx, ty, rot_deg, zoom], np.float64)


def render_view(state: SceneState, size: tuple[int, int], camera: np.ndarray | None = None) -> np.ndarray:
    """Render what the camera sees: RGB uint8 of shape (height, width, 3) for size = (width, height)."""
    width, height = int(size[0]), int(size[1])
    if width < 8 or height < 8:
        raise ValueError(f"size must be at least 8x8 pixels, got {size}")
    ss = max(2, int(math.ceil(384 / max(width, height))))  # supersampling factor
    sw, sh = width * ss, height * ss
    canvas = draw_world(state, sw, sh)
    tx, ty, rot, zoom = (0.0, 0.0, 0.0, 1.0) if camera is None else map(float, camera)
    m = VIEW_MARGIN
    centre_out = np.array([sw / 2, sh / 2])
    centre_canvas = np.array([(0.5 + m + tx) * sw, (0.5 + m + ty) * sh])
    a = math.radians(rot)
    rs = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) / zoom
    matrix = np.hstack([rs, (centre_canvas - rs @ centre_out)[:, None]])
    view = cv2.warpAffine(canvas, matrix, (sw, sh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(view, (width, height), interpolation=cv2.INTER_AREA)
