"""Faces for the synthetic corpus: a frontal face with an articulated mouth (numpy + OpenCV).

Geometry lives in LRW's 256x256 face frame ("canonical" coordinates): eyes, brows, nose and jaw
close to the reference face (frame 6 of LRW ``ABOUT_00001``), the mouth centred in the LRW mouth
box (59, 95, 195, 231). A per-frame 2x3 matrix (head motion, then placement on the canvas) maps the
shape to pixels, so the same matrix moves every drawn part and the 98 WFLW-layout landmarks:

* 0-32 jaw, 33-50 brows, 51-59 nose, 60-75 eyes, 76-87 outer lips, 88-95 inner lips,
  96-97 pupils.

The mouth is driven by the six viseme channels of :data:`lipx.data.lexicon.VISEME` (opening,
spread, rounding, teeth, tongue, press); the jaw and chin follow the opening.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from lipx.video import FPS

log = logging.getLogger(__name__)

LRW_SIZE = 256
FACE_X = 128.0
"""Canonical x of the face's midline."""
EYE_LINE_Y = 97.0
"""Canonical y of the eye line (also the top of the jaw contour)."""
MOUTH_Y = 162.0
"""Canonical y of the mouth's centre (the LRW box centre is (127, 163))."""

_SKIN_LIGHT = np.array([236.0, 200.0, 172.0])
_SKIN_DARK = np.array([112.0, 76.0, 56.0])
_HAIR = np.array([[30, 24, 22], [70, 45, 30], [120, 80, 45], [190, 160, 110], [150, 150, 150],
                  [140, 60, 30]], np.float64)
_IRIS = np.array([[70, 45, 25], [60, 110, 160], [80, 120, 70], [110, 110, 110]], np.float64)


def _rgb(rng: np.random.Generator, base: np.ndarray, spread: float) -> tuple[float, ...]:
    return tuple(float(v) for v in np.clip(base + rng.uniform(-spread, spread, 3), 0, 255))


@dataclass(frozen=True)
class Appearance:
    """A speaker's face: colours (RGB 0-255), shape (canonical px) and lighting."""

    skin: tuple[float, ...]
    lip: tuple[float, ...]
    hair: tuple[float, ...]
    iris: tuple[float, ...]
    teeth: tuple[float, ...]
    background: tuple[float, ...]
    clothes: tuple[float, ...]
    face_width: float
    """Half width of the jaw contour at the eye line."""
    jaw_length: float
    """Eye line to chin."""
    jaw_power: float
    """Super-ellipse exponent of the jaw (2 round, 3.5 square)."""
    eye_spacing: float
    """Half the distance between the pupils."""
    nose_width: float
    mouth_width: float
    """Half width of the neutral mouth."""
    lip_thickness: float
    max_open: float
    """Inner lip gap at full opening."""
    hairline: float
    """Canonical y of the hairline."""
    brightness: float
    light_angle: float
    light_strength: float
    noise: float
    """Pixel noise standard deviation (0-255 scale)."""

    @classmethod
    def random(cls, rng: np.random.Generator) -> Appearance:
        """A random, moderately varied face."""
        skin = _SKIN_LIGHT + rng.uniform(0, 1) * (_SKIN_DARK - _SKIN_LIGHT)
        lip = skin * np.array([0.86, 0.58, 0.6]) + rng.uniform(-8, 8, 3)
        return cls(
            skin=_rgb(rng, skin, 8), lip=_rgb(rng, lip, 6),
            hair=_rgb(rng, _HAIR[rng.integers(len(_HAIR))], 10),
            iris=_rgb(rng, _IRIS[rng.integers(len(_IRIS))], 10),
            teeth=_rgb(rng, np.array([232.0, 226.0, 210.0]), 10),
            background=_rgb(rng, rng.uniform(60, 200, 3), 0),
            clothes=_rgb(rng, rng.uniform(20, 220, 3), 0),
            face_width=float(rng.uniform(55, 62)), jaw_length=float(rng.uniform(102, 112)),
            jaw_power=float(rng.uniform(2.4, 3.4)), eye_spacing=float(rng.uniform(27, 30.5)),
            nose_width=float(rng.uniform(12, 17)), mouth_width=float(rng.uniform(33, 39)),
            lip_thickness=float(rng.uniform(6.0, 9.0)), max_open=float(rng.uniform(22, 28)),
            hairline=float(rng.uniform(35, 55)), brightness=float(rng.uniform(0.85, 1.12)),
            light_angle=float(rng.uniform(0, 2 * np.pi)),
            light_strength=float(rng.uniform(0.0, 0.25)), noise=float(rng.uniform(1.5, 4.0)),
        )


@dataclass
class Shape:
    """Landmarks and drawing polygons of one face, in one coordinate frame."""

    landmarks: np.ndarray
    """(98, 2) float64 x, y."""
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    """Named (K, 2) point arrays (polygons and polylines)."""

    def transformed(self, m: np.ndarray) -> Shape:
        """The shape mapped by a 2x3 affine matrix."""
        def f(p: np.ndarray) -> np.ndarray:
            return p @ m[:, :2].T + m[:, 2]
        return Shape(f(self.landmarks), {k: f(v) for k, v in self.parts.items()})


def _curve(u: np.ndarray, power: float) -> np.ndarray:
    """Lens profile (1 - |u|^p)^(1/p) on u in [-1, 1]."""
    return np.clip(1.0 - np.abs(u) ** power, 0.0, 1.0) ** (1.0 / power)


def _mouth(app: Appearance, vis: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """Lip curves, teeth and tongue polygons for visemes ``vis`` (6,); also the lower-lip drop."""
    open_, spread, round_, teeth, tongue, press = (float(v) for v in vis)
    open_, round_ = max(open_, 0.0), float(np.clip(round_, 0.0, 1.0))
    w = app.mouth_width * (1.0 + 0.12 * spread) * (1.0 - 0.22 * round_)
    wi = w * (0.92 - 0.35 * round_)
    gap = open_ * app.max_open
    up, down = MOUTH_Y - 0.3 * gap, MOUTH_Y + 0.7 * gap
    power = 2.0 + 1.5 * max(spread, 0.0) * (1.0 - round_)
    u = np.linspace(-1.0, 1.0, 41)
    q_in = _curve(u * w / wi, power)  # zero beyond the inner corners
    thick = app.lip_thickness * (1.0 + 0.3 * round_) * (1.0 - 0.55 * np.clip(press, 0, 1))
    bow = 1.0 + 0.2 * np.exp(-(((np.abs(u) - 0.22) / 0.12) ** 2)) \
        - 0.15 * np.exp(-((u / 0.07) ** 2))
    x = FACE_X + u * w
    upper_in = MOUTH_Y - 0.3 * gap * q_in
    lower_in = MOUTH_Y + 0.7 * gap * q_in
    upper_out = upper_in - 0.8 * thick * _curve(u, 2.2) * bow - 0.6
    lower_out = lower_in + 1.1 * thick * _curve(u, 2.4) + 0.6
    parts = {"upper_out": np.stack([x, upper_out], 1), "upper_in": np.stack([x, upper_in], 1),
             "lower_in": np.stack([x, lower_in], 1), "lower_out": np.stack([x, lower_out], 1)}
    tw = 0.72 * app.mouth_width
    tx = FACE_X + np.linspace(-tw, tw, 15)
    tq = _curve(np.linspace(-1, 1, 15), 4.0)
    t_up = up + (8.0 * np.clip(teeth, 0, 1) - 2.5) * tq
    t_low = down - (6.0 * np.clip(teeth, 0, 1) - 2.5) * tq
    parts["teeth_up"] = np.concatenate([np.stack([tx, np.full(15, up - 12.0)], 1),
                                        np.stack([tx, t_up], 1)[::-1]])
    parts["teeth_low"] = np.concatenate([np.stack([tx, t_low], 1),
                                         np.stack([tx, np.full(15, down + 12.0)], 1)[::-1]])
    top = down + 3.0 + np.clip(tongue, 0, 1) * (up + 1.0 - down - 3.0)
    a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    parts["tongue"] = np.stack([FACE_X + 0.55 * tw * np.cos(a), top + 11 + 11 * np.sin(a)], 1)
    return parts, 0.7 * gap


def _mouth_landmarks(parts: dict[str, np.ndarray], vis: np.ndarray) -> np.ndarray:
    """Landmarks 76-95 sampled from the lip curves (outer 12, inner 8)."""
    def at(name: str, frac: float) -> np.ndarray:
        curve = parts[name]
        return np.array([np.interp(frac, np.linspace(-1, 1, len(curve)), curve[:, 0]),
                         np.interp(frac, np.linspace(-1, 1, len(curve)), curve[:, 1])])
    w = parts["upper_out"][-1, 0] - FACE_X
    wi = w * (0.92 - 0.35 * float(np.clip(vis[2], 0, 1)))
    r = wi / w
    outer = [at("upper_out", f) for f in (-1, -0.6, -0.2, 0, 0.2, 0.6, 1)]
    outer += [at("lower_out", f) for f in (0.6, 0.3, 0, -0.3, -0.6)]
    inner = [at("upper_in", f * r) for f in (-1, -0.45, 0, 0.45, 1)]
    inner += [at("lower_in", f * r) for f in (0.45, 0, -0.45)]
    return np.array(outer + inner)


def _jaw(app: Appearance, drop: float) -> tuple[np.ndarray, np.ndarray]:
    """The jaw contour: 33 landmarks and a dense curve, chin lowered by ``drop`` * 0.85."""
    phi = np.linspace(-np.pi / 2, np.pi / 2, 400)
    e = 2.0 / app.jaw_power
    x = FACE_X + app.face_width * np.sign(phi) * np.abs(np.sin(phi)) ** e
    y = EYE_LINE_Y + app.jaw_length * np.abs(np.cos(phi)) ** e
    arc = np.concatenate([[0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    weight = np.clip((y - 130.0) / (EYE_LINE_Y + app.jaw_length - 130.0), 0, 1)
    y = y + 0.85 * drop * weight
    pick = np.interp(np.linspace(0, arc[-1], 33), arc, np.arange(len(x)))
    landmarks = np.stack([np.interp(pick, np.arange(len(x)), x),
                          np.interp(pick, np.arange(len(x)), y)], 1)
    return landmarks, np.stack([x, y], 1)[::8]


def _eyes_brows_nose(app: Appearance, blink: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Landmarks 33-75 and 96-97 (brows, nose, eyes, pupils) and their drawing polygons."""
    pts, parts = {}, {}
    u = np.array([-0.5, 0.0, 0.5])
    lid = max(0.0, 1.0 - blink)
    for side, sign in (("l", -1.0), ("r", 1.0)):
        ex = FACE_X + sign * app.eye_spacing
        inner_y, outer_y = EYE_LINE_Y + 1.5, EYE_LINE_Y
        left_y, right_y = (outer_y, inner_y) if side == "l" else (inner_y, outer_y)
        upper = EYE_LINE_Y - 4.8 * lid * (1 - u ** 2) ** 0.8 - 0.6
        lower = EYE_LINE_Y + 3.4 * lid * (1 - u ** 2) ** 0.8 + 0.8
        eye = [(ex - 12, left_y)] + [(ex + 12 * v, y) for v, y in zip(u, upper, strict=True)] \
            + [(ex + 12, right_y)] \
            + [(ex + 12 * v, y) for v, y in zip(u[::-1], lower[::-1], strict=True)]
        pts[f"eye_{side}"] = np.array(eye)
        pts[f"pupil_{side}"] = np.array([[ex, EYE_LINE_Y]])
        v = np.linspace(0, 1, 5)  # outer -> inner along the upper edge
        bx = ex + sign * (21.0 - 34.0 * v)
        by = EYE_LINE_Y - 25.0 + np.where(v < 0.5, 36.0, 16.0) * (v - 0.5) ** 2
        top = np.stack([bx, by], 1)
        bottom = np.stack([bx[1:][::-1], by[1:][::-1] + 5.0 + 2.0 * v[1:][::-1]], 1)
        brow = np.concatenate([top, bottom])  # left: outer..inner, lower inner..outer
        pts[f"brow_{side}"] = brow if side == "l" else _mirror_brow(brow)
        parts[f"brow_{side}"] = brow
    nose_tip = 140.0
    bridge = np.stack([np.full(4, FACE_X), np.linspace(EYE_LINE_Y, 131.0, 4)], 1)
    nw = app.nose_width
    lower = np.array([[FACE_X - nw, nose_tip - 2.5], [FACE_X - 0.5 * nw, nose_tip - 1],
                      [FACE_X, nose_tip], [FACE_X + 0.5 * nw, nose_tip - 1],
                      [FACE_X + nw, nose_tip - 2.5]])
    landmarks = np.concatenate([pts["brow_l"], pts["brow_r"], bridge, lower, pts["eye_l"],
                                pts["eye_r"]])
    parts.update(eye_l=pts["eye_l"], eye_r=pts["eye_r"])
    return np.concatenate([landmarks, pts["pupil_l"], pts["pupil_r"]]), parts


def _mirror_brow(brow: np.ndarray) -> np.ndarray:
    """Right brow in WFLW order: upper inner..outer, lower outer..inner."""
    return np.concatenate([brow[:5][::-1], brow[5:][::-1]])


def face_shape(app: Appearance, vis: np.ndarray, blink: float = 0.0) -> Shape:
    """The canonical face shape (LRW 256x256 geometry) for visemes ``vis`` (6,) and an eyelid
    closure ``blink`` in [0, 1]."""
    mouth, drop = _mouth(app, vis)
    jaw, jaw_curve = _jaw(app, drop)
    upper, eye_parts = _eyes_brows_nose(app, blink)
    landmarks = np.concatenate([jaw, upper[:-2], _mouth_landmarks(mouth, vis), upper[-2:]])
    theta = np.linspace(0.0, np.pi, 40)
    a, top = app.face_width, EYE_LINE_Y
    forehead = np.stack([FACE_X + a * np.cos(theta), top - 88.0 * np.sin(theta)], 1)
    hair_out = np.stack([FACE_X + (a + 5) * np.cos(theta * 1.1 - 0.08),
                         top - 3 - 95.0 * np.sin(theta * 1.1 - 0.08)], 1)
    hx = np.linspace(-1, 1, 21)
    hair_in = np.stack([FACE_X + hx * (a - 1), app.hairline + 16 * hx ** 2
                        + np.where(np.abs(hx) > 0.85, (np.abs(hx) - 0.85) * 160, 0)], 1)
    parts = dict(mouth, **eye_parts)
    parts["face"] = np.concatenate([jaw_curve, forehead[1:-1]])
    parts["hair"] = np.concatenate([hair_out, hair_in])
    parts["nose"] = landmarks[55:60]
    parts["nostrils"] = landmarks[[56, 58]]
    parts["chin"] = np.array([[FACE_X - 10, 0], [FACE_X, 2.0], [FACE_X + 10, 0]]) \
        + [0.0, parts["lower_out"][20, 1] + 9.0]
    corner_l, corner_r = landmarks[76], landmarks[82]
    parts["fold_l"] = np.array([[FACE_X - app.nose_width - 3, 136.0],
                                [corner_l[0] - 3, 150.0], corner_l + [-6.0, 8.0]])
    parts["fold_r"] = np.array([[FACE_X + app.nose_width + 3, 136.0],
                                [corner_r[0] + 3, 150.0], corner_r + [6.0, 8.0]])
    parts["ear_l"] = _ellipse(FACE_X - a + 1, top + 20, 8, 18)
    parts["ear_r"] = _ellipse(FACE_X + a - 1, top + 20, 8, 18)
    return Shape(landmarks, parts)


def average_face(n_faces: int = 1024, seed: int = 98) -> np.ndarray:
    """(98, 2) mean landmarks of ``n_faces`` random faces (:meth:`Appearance.random`), neutral
    mouth, eyes open, in the canonical frame: the reference face of the ``synthetic`` framing
    (:func:`lipx.landmarks.named_framing`). The canonical frame is where ``--layout lrw``
    places every face, so fitting a face's stable points onto this average reproduces that
    framing."""
    rng = np.random.default_rng(seed)
    neutral = np.zeros(6)
    return np.mean([face_shape(Appearance.random(rng), neutral).landmarks
                    for _ in range(n_faces)], axis=0)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1)


# --- drawing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """Where the canonical face lands on the canvas: a canvas size and a 2x3 matrix."""

    width: int
    height: int
    matrix: np.ndarray
    """(2, 3) float64, canonical -> canvas pixels."""

    @classmethod
    def lrw(cls, size: int = LRW_SIZE) -> Placement:
        """LRW geometry: the canonical frame itself, scaled to ``size``."""
        s = size / LRW_SIZE
        return cls(size, size, np.array([[s, 0.0, 0.0], [0.0, s, 0.0]]))

    @classmethod
    def grid(cls, rng: np.random.Generator, width: int = 360, height: int = 288) -> Placement:
        """A GRID-like camera: the face smaller or larger than LRW's, off-centre, slightly
        rotated, so it has to be aligned with its landmarks."""
        s = height / 288 * float(rng.uniform(0.72, 0.92))
        angle = np.deg2rad(float(rng.uniform(-4, 4)))
        cx = width * (0.5 + float(rng.uniform(-0.08, 0.08)))
        cy = height * (0.48 + float(rng.uniform(-0.04, 0.04)))
        return cls(width, height, _similarity(s, angle, (FACE_X, 128.0), (cx, cy)))


def _similarity(scale: float, angle: float, pivot: tuple[float, float],
                target: tuple[float, float]) -> np.ndarray:
    """2x3 matrix rotating/scaling about ``pivot`` and moving it to ``target``."""
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return np.concatenate([rot, (np.array(target) - rot @ np.array(pivot))[:, None]], 1)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 matrix of ``a`` applied after ``b``."""
    return np.concatenate([a[:, :2] @ b[:, :2], (a[:, :2] @ b[:, 2] + a[:, 2])[:, None]], 1)


def head_motion(rng: np.random.Generator, n_frames: int, fps: float = FPS) -> np.ndarray:
    """Smooth small head motion: (T, 2, 3) similarity matrices in canonical coordinates.

    Rotation within about +-2 degrees, scale +-2 %, translation +-3 px, as sums of slow sinusoids.
    """
    t = np.arange(n_frames) / fps

    def wave(amplitude: float) -> np.ndarray:
        f = rng.uniform(0.15, 0.8, 2)
        ph = rng.uniform(0, 2 * np.pi, 2)
        return amplitude * 0.5 * (np.sin(2 * np.pi * f[0] * t + ph[0])
                                  + np.sin(2 * np.pi * f[1] * t + ph[1]))

    angle, scale = np.deg2rad(wave(2.0)), 1.0 + wave(0.02)
    dx, dy = wave(3.0), wave(2.0)
    return np.stack([_similarity(scale[i], angle[i], (FACE_X, 150.0),
                                 (FACE_X + dx[i], 150.0 + dy[i])) for i in range(n_frames)])


def blinks(rng: np.random.Generator, n_frames: int, fps: float = FPS) -> np.ndarray:
    """Eyelid closure per frame (T,) in [0, 1]: a blink every few seconds, three frames long."""
    closure = np.zeros(n_frames)
    t = float(rng.exponential(3.0)) * fps
    while t < n_frames:
        i = int(t)
        for k, v in zip(range(i - 1, i + 2), (0.5, 1.0, 0.5), strict=True):
            if 0 <= k < n_frames:
                closure[k] = max(closure[k], v)
        t += fps * (1.0 + float(rng.exponential(3.0)))
    return closure


def _pts(p: np.ndarray) -> list[np.ndarray]:
    return [np.round(p * 16.0).astype(np.int32)]


def _fill(img: np.ndarray, p: np.ndarray, colour: tuple[float, ...]) -> None:
    cv2.fillPoly(img, _pts(p), colour, cv2.LINE_AA, shift=4)


def _line(img: np.ndarray, p: np.ndarray, colour: tuple[float, ...], width: int,
          closed: bool = False) -> None:
    cv2.polylines(img, _pts(p), closed, colour, max(1, width), cv2.LINE_AA, shift=4)


def _shade(colour: tuple[float, ...], k: float) -> tuple[float, ...]:
    return tuple(min(255.0, c * k) for c in colour)


def static_layer(app: Appearance, place: Placement) -> np.ndarray:
    """Background, shoulders and neck (they do not follow head motion): (H, W, 3) uint8 RGB."""
    h, w = place.height, place.width
    ramp = np.linspace(1.08, 0.85, h, dtype=np.float32)[:, None, None]
    img = np.clip(np.array(app.background, np.float32) * ramp, 0, 255)
    img = np.ascontiguousarray(np.broadcast_to(img, (h, w, 3))).astype(np.uint8)
    a, chin = app.face_width, EYE_LINE_Y + app.jaw_length
    neck = np.array([[FACE_X - 0.55 * a, 150], [FACE_X - 0.6 * a, chin + 60],
                     [FACE_X + 0.6 * a, chin + 60], [FACE_X + 0.55 * a, 150]])
    torso = np.array([[FACE_X - 0.62 * a, chin + 22], [FACE_X - 2.0 * a, chin + 55],
                      [FACE_X - 2.6 * a, chin + 200], [FACE_X + 2.6 * a, chin + 200],
                      [FACE_X + 2.0 * a, chin + 55], [FACE_X + 0.62 * a, chin + 22],
                      [FACE_X, chin + 42]])
    m = place.matrix
    _fill(img, neck @ m[:, :2].T + m[:, 2], _shade(app.skin, 0.8))
    _fill(img, torso @ m[:, :2].T + m[:, 2], app.clothes)
    return img


def lighting(app: Appearance, place: Placement) -> np.ndarray:
    """Multiplicative light field (H, W, 1) float32: brightness and a directional gradient."""
    ys, xs = np.mgrid[0:place.height, 0:place.width].astype(np.float32)
    d = ((xs - place.width / 2) * np.cos(app.light_angle)
         + (ys - place.height / 2) * np.sin(app.light_angle)) / max(place.width, place.height)
    return (app.brightness * (1.0 + app.light_strength * 2.0 * d))[..., None]


def draw_face(img: np.ndarray, shape: Shape, app: Appearance, scale: float) -> None:
    """Draw a face shape (canvas coordinates) onto ``img`` (H, W, 3) uint8 RGB, in place."""
    p = shape.parts
    skin = app.skin
    for ear in ("ear_l", "ear_r"):
        _fill(img, p[ear], _shade(skin, 0.88))
    _fill(img, p["face"], skin)
    _fill(img, p["hair"], app.hair)
    for fold in ("fold_l", "fold_r"):
        _line(img, p[fold], _shade(skin, 0.86), round(1.5 * scale))
    for side in ("l", "r"):
        _fill(img, p[f"brow_{side}"], _shade(app.hair, 0.85))
        eye = p[f"eye_{side}"]
        _fill(img, eye, (238.0, 236.0, 230.0))
        height = np.ptp(eye[:, 1])
        if height > 3.0 * scale:
            centre = shape.landmarks[96 if side == "l" else 97]
            cv2.circle(img, tuple(np.round(centre * 16).astype(int)), int(16 * 0.42 * height),
                       app.iris, -1, cv2.LINE_AA, shift=4)
            cv2.circle(img, tuple(np.round(centre * 16).astype(int)), int(16 * 0.18 * height),
                       (20.0, 20.0, 20.0), -1, cv2.LINE_AA, shift=4)
        _line(img, eye[:5], _shade(skin, 0.35), round(1.6 * scale))
        _line(img, eye, _shade(skin, 0.6), round(scale), closed=True)
    _line(img, p["nose"], _shade(skin, 0.72), round(1.5 * scale))
    for nostril in p["nostrils"]:
        cv2.ellipse(img, tuple(np.round(nostril * 16).astype(int)),
                    (int(16 * 3.2 * scale), int(16 * 1.8 * scale)), 0, 0, 360,
                    _shade(skin, 0.45), -1, cv2.LINE_AA, shift=4)
    _draw_mouth(img, p, app)
    _line(img, p["chin"], _shade(skin, 0.88), round(1.5 * scale))


def _draw_mouth(img: np.ndarray, p: dict[str, np.ndarray], app: Appearance) -> None:
    """Lips, then the mouth interior (dark, teeth, tongue) composited through the inner contour."""
    _fill(img, np.concatenate([p["upper_out"], p["lower_out"][::-1]]), app.lip)
    _fill(img, np.concatenate([p["upper_out"], p["upper_in"][::-1]]), _shade(app.lip, 0.85))
    inner = np.concatenate([p["upper_in"], p["lower_in"][::-1]])
    x0, y0 = np.floor(inner.min(0)).astype(int) - 2
    x1, y1 = np.ceil(inner.max(0)).astype(int) + 3
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, img.shape[1]), min(y1, img.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    off = np.array([x0, y0], np.float64)
    roi = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    roi[:] = _shade(app.lip, 0.3)
    _fill(roi, p["teeth_low"] - off, _shade(app.teeth, 0.9))
    _fill(roi, p["tongue"] - off, (178.0, 84.0, 92.0))
    _fill(roi, p["teeth_up"] - off, app.teeth)
    mask = np.zeros(roi.shape[:2], np.uint8)
    _fill(mask, inner - off, (255.0,))
    alpha = mask[..., None].astype(np.float32) / 255.0
    area = img[y0:y1, x0:x1]
    area[:] = (area * (1.0 - alpha) + roi * alpha + 0.5).astype(np.uint8)


def render_frames(app: Appearance, place: Placement, visemes: np.ndarray,
                  rng: np.random.Generator, noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Render a clip.

    Args:
        app: the speaker's face.
        place: canvas size and placement of the canonical face.
        visemes: (T, 6) mouth parameters per frame (:data:`lipx.data.lexicon.VISEME`).
        rng: randomness for head motion, blinks and pixel noise.
        noise: add pixel noise.

    Returns:
        frames (T, H, W, 3) uint8 RGB and landmarks (T, 98, 2) float64 in canvas pixels.
    """
    n = len(visemes)
    motion = head_motion(rng, n)
    closure = blinks(rng, n)
    base = static_layer(app, place)
    light = lighting(app, place)
    frames = np.empty((n, place.height, place.width, 3), np.uint8)
    landmarks = np.empty((n, 98, 2))
    for i in range(n):
        m = _compose(place.matrix, motion[i])
        shape = face_shape(app, visemes[i], closure[i]).transformed(m)
        img = base.copy()
        draw_face(img, shape, app, float(np.sqrt(abs(np.linalg.det(m[:, :2])))))
        out = img.astype(np.float32) * light
        if noise:
            out += rng.standard_normal((place.height, place.width, 1), np.float32) * app.noise
        frames[i] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        landmarks[i] = shape.landmarks
    return frames, landmarks
