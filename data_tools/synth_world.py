"""Procedural scenes with real cross-shot structure: persistent characters in an environment.

A scene samples characters (shape, colour, size, texture: fixed for the whole scene) and an
environment (background colour, pattern, light). Each shot picks a framing (wide / mid / close,
centred on a character), starting positions and motions; :func:`render_shot` rasterises it
with numpy (world coordinates in [0, 1]^2, so the background pattern is consistent across
framings). Everything is drawn from a ``numpy.random.Generator``: same seed, same scene.

Two kinds of world (``sample_world(hidden=...)``):

* **hidden** (the default of ``lct-shards synth``): each character's exact colour (a continuous
  hue / saturation / value draw, hues kept apart within a scene), its texture and size, and
  the room's colour and pattern are drawn per scene and *never named in a prompt*: prompts
  name characters by role and shape only. Only the scene's context can keep them consistent
  across shots.
* **described**: named colours and sizes from small palettes, all stated in the prompts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CHARACTER_COLOURS = {
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (235, 220, 40),
    "magenta": (220, 50, 210), "cyan": (40, 210, 220), "orange": (240, 140, 30), "white": (240, 240, 240),
}
BACKGROUND_COLOURS = {
    "navy": (20, 25, 70), "forest": (20, 60, 30), "maroon": (70, 20, 25), "slate": (60, 65, 75),
    "plum": (60, 30, 70), "sand": (150, 130, 90),
}
ROLES = ("the host", "the visitor", "the guard", "the child", "the painter", "the courier")
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.09, "medium": 0.12, "large": 0.16}  # radius, fraction of the world
TEXTURES = ("solid", "striped", "dotted")
PATTERNS = ("plain", "grid", "dots")
LIGHTS = {"bright": 1.0, "dim": 0.75}
FRAMINGS = {"wide": 1.0, "mid": 1.6, "close": 2.4}  # zoom factor
TEXTURE_SHADE = 0.6  # stripes/dots are the base colour darkened by this factor
PATTERN_SHADE = 0.7
TEXTURE_PERIOD = 0.05  # world units
GRID_PERIOD = 0.2
GRID_LINE = 0.02
DOT_PERIOD = 0.1
DOT_SIZE = 0.025
# Hidden colours (HSV): characters bright and saturated, rooms darker and greyer, so a
# character never blends into its room. Hues of one scene's characters stay this far apart.
CHARACTER_HSV = ((0.0, 1.0), (0.6, 1.0), (0.8, 1.0))
ROOM_HSV = ((0.0, 1.0), (0.25, 0.6), (0.25, 0.55))
MIN_HUE_GAP = 0.15
RADIUS_RANGE = (0.09, 0.16)  # hidden sizes: world units, continuous
MAX_SPEED = 0.25  # world units per second
WORLD_MARGIN = 0.2


@dataclass
class Character:
    index: int  # 1-based, as in "Character K"
    shape: str
    colour: str  # a palette name, or "hidden" (then only ``rgb`` says which)
    size: str  # a palette name, or "hidden"
    texture: str
    rgb: tuple[int, int, int]
    radius: float  # world units
    role: str = ""

    @property
    def hidden(self) -> bool:
        return self.colour == "hidden"

    def describe(self) -> str:
        if self.hidden:
            return f"{self.role}, a {self.shape}"
        tex = {"solid": "solid", "striped": "with stripes", "dotted": "with dots"}[self.texture]
        return f"a {self.size} {self.colour} {self.shape}, {tex}"


@dataclass
class Environment:
    colour: str  # a palette name, or "hidden"
    pattern: str
    light: str
    rgb: tuple[int, int, int]

    def describe(self) -> str:
        if self.colour == "hidden":
            return f"A {self.light}ly lit room."
        pat = {"plain": "plain", "grid": "grid-patterned", "dots": "dotted"}[self.pattern]
        return f"A {self.light}ly lit {pat} {self.colour} room."


@dataclass
class ShotPlan:
    framing: str
    focus: int  # character index the camera centres on (0: the room centre)
    start: dict[int, tuple[float, float]]  # character -> world position at t=0
    velocity: dict[int, tuple[float, float]]  # world units per second


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] -> RGB 0..255 (the standard hexcone)."""
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(round(255 * c) for c in rgb)  # type: ignore[return-value]


def _draw_hsv(rng: np.random.Generator, ranges, hue: float | None = None) -> tuple[int, int, int]:
    (h0, h1), (s0, s1), (v0, v1) = ranges
    h = rng.uniform(h0, h1) if hue is None else hue
    return hsv_to_rgb(float(h), float(rng.uniform(s0, s1)), float(rng.uniform(v0, v1)))


def _distinct_hues(rng: np.random.Generator, n: int) -> list[float]:
    """``n`` hues on the colour circle, pairwise at least ``MIN_HUE_GAP`` apart."""
    while True:
        hues = rng.uniform(0.0, 1.0, size=n)
        gaps = [abs(a - b) for i, a in enumerate(hues) for b in hues[i + 1:]]
        if all(min(g, 1 - g) >= MIN_HUE_GAP for g in gaps):
            return [float(h) for h in hues]


def sample_world(rng: np.random.Generator, max_characters: int,
                 hidden: bool = True) -> tuple[list[Character], Environment]:
    """Characters and room of one scene; ``hidden``: continuous colours / sizes the prompts
    do not name (see the module doc), else named palette entries."""
    n = int(rng.integers(1, max_characters + 1))
    shapes = [str(rng.choice(SHAPES)) for _ in range(n)]
    textures = [str(rng.choice(TEXTURES)) for _ in range(n)]
    light = str(rng.choice(list(LIGHTS)))
    pattern = str(rng.choice(PATTERNS))
    if hidden:
        roles = rng.choice(ROLES, size=n, replace=False)
        hues = _distinct_hues(rng, n)
        chars = [Character(i + 1, shapes[i], "hidden", "hidden", textures[i],
                           _draw_hsv(rng, CHARACTER_HSV, hues[i]),
                           float(rng.uniform(*RADIUS_RANGE)), str(roles[i])) for i in range(n)]
        return chars, Environment("hidden", pattern, light, _draw_hsv(rng, ROOM_HSV))
    colours = rng.choice(list(CHARACTER_COLOURS), size=n, replace=False)
    sizes = [str(rng.choice(list(SIZES))) for _ in range(n)]
    chars = [Character(i + 1, shapes[i], str(colours[i]), sizes[i], textures[i],
                       CHARACTER_COLOURS[str(colours[i])], SIZES[sizes[i]]) for i in range(n)]
    room = str(rng.choice(list(BACKGROUND_COLOURS)))
    return chars, Environment(room, pattern, light, BACKGROUND_COLOURS[room])


def _position(rng: np.random.Generator) -> tuple[float, float]:
    return tuple(float(v) for v in rng.uniform(WORLD_MARGIN, 1 - WORLD_MARGIN, size=2))


def _velocity(rng: np.random.Generator) -> tuple[float, float]:
    angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0) * MAX_SPEED
    return float(np.cos(angle) * speed), float(np.sin(angle) * speed)


def sample_shot(rng: np.random.Generator, chars: list[Character], framing: str | None = None) -> ShotPlan:
    framing = framing or str(rng.choice(list(FRAMINGS)))
    focus = 0 if framing == "wide" else int(rng.integers(1, len(chars) + 1))
    start = {c.index: _position(rng) for c in chars}
    velocity = {c.index: _velocity(rng) for c in chars}
    return ShotPlan(framing, focus, start, velocity)


def positions(plan: ShotPlan, t: float) -> dict[int, tuple[float, float]]:
    """World positions at time ``t``, bouncing off the walls."""
    out = {}
    for k, (x, y) in plan.start.items():
        vx, vy = plan.velocity[k]
        out[k] = (_bounce(x + vx * t), _bounce(y + vy * t))
    return out


def _bounce(v: float) -> float:
    lo, hi = WORLD_MARGIN / 2, 1 - WORLD_MARGIN / 2
    span = hi - lo
    u = (v - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


def camera(plan: ShotPlan, pos: dict[int, tuple[float, float]]) -> tuple[float, float, float]:
    """``(cx, cy, zoom)`` of the shot at one instant (mid/close follow their focus)."""
    zoom = FRAMINGS[plan.framing]
    cx, cy = pos[plan.focus] if plan.focus else (0.5, 0.5)
    return float(cx), float(cy), zoom


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r * 1.2
    return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (r * 0.8 - dy) * 0.6)  # triangle, apex up


def render_frame(chars: list[Character], env: Environment, pos: dict[int, tuple[float, float]],
                 cam: tuple[float, float, float], size: tuple[int, int]) -> np.ndarray:
    """``uint8 [H, W, 3]`` of one instant."""
    h, w = size
    cx, cy, zoom = cam
    ys = cy + ((np.arange(h) + 0.5) / h - 0.5) / zoom
    xs = cx + ((np.arange(w) + 0.5) / w - 0.5) / zoom
    wx, wy = np.meshgrid(xs, ys)
    base = np.array(env.rgb, dtype=np.float32)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    if env.pattern == "grid":
        line = ((wx % GRID_PERIOD) < GRID_LINE) | ((wy % GRID_PERIOD) < GRID_LINE)
        img[line] *= PATTERN_SHADE
    elif env.pattern == "dots":
        img[((wx % DOT_PERIOD) < DOT_SIZE) & ((wy % DOT_PERIOD) < DOT_SIZE)] *= PATTERN_SHADE
    for c in chars:
        px, py = pos[c.index]
        dx, dy = wx - px, wy - py
        mask = _shape_mask(c.shape, dx, dy, c.radius)
        colour = np.array(c.rgb, dtype=np.float32)
        img[mask] = colour
        if c.texture == "striped":
            img[mask & ((dx % TEXTURE_PERIOD) < TEXTURE_PERIOD / 3)] = colour * TEXTURE_SHADE
        elif c.texture == "dotted":
            dots = ((dx % TEXTURE_PERIOD) < TEXTURE_PERIOD / 3) & ((dy % TEXTURE_PERIOD) < TEXTURE_PERIOD / 3)
            img[mask & dots] = colour * TEXTURE_SHADE
    img *= LIGHTS[env.light]
    return np.clip(img.round(), 0, 255).astype(np.uint8)


def visible(pos: dict[int, tuple[float, float]], cam: tuple[float, float, float], char: Character) -> bool:
    """Whether the character's centre lies inside the frame."""
    cx, cy, zoom = cam
    px, py = pos[char.index]
    half = 0.5 / zoom
    return abs(px - cx) <= half and abs(py - cy) <= half


def render_shot(chars, env, plan: ShotPlan, num_frames: int, fps: float, size: tuple[int, int],
                t0: float = 0.0) -> tuple[np.ndarray, list[dict]]:
    """Frames ``uint8 [T, H, W, 3]`` and per-frame ground truth (camera, pixel positions)."""
    frames, truth = [], []
    h, w = size
    for i in range(num_frames):
        pos = positions(plan, t0 + i / fps)
        cam = camera(plan, pos)
        frames.append(render_frame(chars, env, pos, cam, size))
        cx, cy, zoom = cam
        pix = {str(k): [((x - cx) * zoom + 0.5) * w, ((y - cy) * zoom + 0.5) * h] for k, (x, y) in pos.items()}
        truth.append({"camera": list(cam), "pixel_positions": pix,
                      "visible": [c.index for c in chars if visible(pos, cam, c)]})
    return np.stack(frames), truth


HIDDEN_ATTRIBUTES = ("characters.rgb", "characters.radius", "characters.texture",
                     "environment.rgb", "environment.pattern")


def world_truth(chars: list[Character], env: Environment) -> dict:
    """Every attribute of the scene's world; ``hidden`` lists those no prompt states."""
    light = LIGHTS[env.light]
    return {
        "characters": [asdict(c) | {"rgb": list(c.rgb), "rendered_rgb": [round(v * light) for v in c.rgb]}
                       for c in chars],
        "environment": asdict(env) | {"rgb": list(env.rgb), "rendered_rgb": [round(v * light) for v in env.rgb]},
        "hidden": list(HIDDEN_ATTRIBUTES) if env.colour == "hidden" else [],
    }
