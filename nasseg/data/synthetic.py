"""Synthetic scenes: learnable, not trivial stand-ins for the real datasets.

Every class has a fixed appearance (two colours blended by a class-specific
texture: stripes of some orientation and period, checks, dots, rings, or flat)
and, for object ("thing") classes, a class-specific shape and size. Pairs of
classes share their main colour and differ only in texture, so colour alone
does not separate them; each instance gets its own colour jitter and texture
phase, and every image gets an illumination gradient, blur and pixel noise.
"Stuff" classes fill wavy horizontal bands ordered by their usual height in
the scene (sky above buildings above road). Appearances are fixed per dataset
(not per seed), so a model trained on one seed generalises to another; the
seed only drives layouts and noise. Depth (NYUD) follows the layout: bands
recede towards the horizon, objects stand in front of them.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from .classes import IGNORE_INDEX

TEXTURES = ("flat", "hstripes", "vstripes", "diagonal", "checker", "dots", "rings", "antidiagonal")
SHAPES = ("rect", "ellipse", "triangle", "bar", "polygon", "diamond")


@dataclass(frozen=True)
class ClassStyle:
    colour: tuple[float, float, float]
    colour2: tuple[float, float, float]
    texture: str
    period: float          # texture period in pixels at an image height of 128
    stuff: bool
    vpos: float            # preferred vertical position of a stuff band (0 top, 1 bottom)
    shape: str
    size: tuple[float, float]  # object height as a fraction of the image height
    aspect: float          # object width / height
    depth: tuple[float, float]  # metres (NYUD)


@dataclass(frozen=True)
class SceneSpec:
    """Which classes are stuff (with their vertical position), which are things."""

    num_classes: int
    stuff: dict[int, float]
    things_per_image: tuple[int, int]
    stuff_per_image: tuple[int, int]
    #: shape overrides for a few classes (e.g. poles are bars)
    shapes: dict[int, str]
    void_fraction: float = 0.0   # chance of a void blob per image
    #: stuff classes whose appearance is drawn anew for every image (VOC's cluttered background)
    varied: tuple[int, ...] = ()


SPECS = {
    "cityscapes": SceneSpec(
        19, stuff={10: 0.02, 2: 0.30, 8: 0.35, 3: 0.50, 4: 0.55, 9: 0.75, 1: 0.82, 0: 0.95},
        things_per_image=(3, 6), stuff_per_image=(3, 4),
        shapes={5: "bar", 6: "rect", 7: "triangle", 11: "ellipse", 12: "ellipse", 13: "rect",
                14: "rect", 15: "rect", 16: "rect", 17: "diamond", 18: "diamond"},
        void_fraction=0.5),
    "camvid": SceneSpec(
        11, stuff={0: 0.02, 5: 0.30, 1: 0.35, 7: 0.60, 4: 0.80, 3: 0.95},
        things_per_image=(2, 4), stuff_per_image=(3, 4),
        shapes={2: "bar", 6: "triangle", 8: "rect", 9: "ellipse", 10: "diamond"},
        void_fraction=0.5),
    "voc": SceneSpec(
        21, stuff={0: 0.5}, things_per_image=(1, 3), stuff_per_image=(1, 1), shapes={},
        varied=(0,)),
    "nyud": SceneSpec(
        40, stuff={21: 0.02, 0: 0.40, 12: 0.45, 15: 0.45, 1: 0.95},
        things_per_image=(3, 6), stuff_per_image=(2, 3), shapes={}, void_fraction=0.5),
}


def class_styles(dataset: str) -> list[ClassStyle]:
    """The fixed appearance of every class of `dataset` (independent of the seed)."""
    spec = SPECS[dataset]
    rng = np.random.default_rng(zlib.crc32(dataset.encode()))
    k = spec.num_classes
    # Pairs of classes share the main colour; the pair differs in texture.
    base = rng.uniform(30, 225, size=((k + 1) // 2, 3))
    textures = list(TEXTURES)
    styles = []
    for c in range(k):
        colour = base[c // 2] + rng.normal(0, 6, 3)
        colour2 = np.clip(colour + rng.choice([-1, 1], 3) * rng.uniform(50, 90, 3), 0, 255)
        tex_a, tex_b = rng.choice(len(textures), 2, replace=False)
        texture = textures[tex_a] if c % 2 == 0 else textures[tex_b]
        if c % 2 == 1 and texture == styles[-1].texture:
            texture = textures[(textures.index(texture) + 1) % len(textures)]
        stuff = c in spec.stuff
        shape = spec.shapes.get(c, SHAPES[int(rng.integers(len(SHAPES)))])
        lo = float(rng.uniform(0.15, 0.35))
        styles.append(ClassStyle(
            colour=tuple(float(v) for v in np.clip(colour, 0, 255)),
            colour2=tuple(float(v) for v in colour2),
            texture=texture, period=float(rng.uniform(5, 14)), stuff=stuff,
            vpos=spec.stuff.get(c, 0.5), shape=shape,
            size=(lo, lo + float(rng.uniform(0.15, 0.35))) if shape != "bar" else (0.4, 0.8),
            aspect=float(rng.uniform(0.5, 2.0)) if shape != "bar" else 0.08,
            depth=(float(rng.uniform(0.8, 2.5)), float(rng.uniform(2.5, 6.0)))))
    return styles


def _texture(name: str, period: float, xx: np.ndarray, yy: np.ndarray, phase: float,
             cx: float, cy: float) -> np.ndarray:
    w = 2 * np.pi / period
    if name == "flat":
        return np.zeros_like(xx)
    if name == "hstripes":
        t = np.sin(w * yy + phase)
    elif name == "vstripes":
        t = np.sin(w * xx + phase)
    elif name == "diagonal":
        t = np.sin(w * (xx + yy) / np.sqrt(2) + phase)
    elif name == "antidiagonal":
        t = np.sin(w * (xx - yy) / np.sqrt(2) + phase)
    elif name == "checker":
        t = np.sign(np.sin(w * xx + phase) * np.sin(w * yy + phase))
    elif name == "dots":
        t = (np.sin(w * xx + phase) * np.sin(w * yy + phase) > 0.5) * 2.0 - 1.0
    elif name == "rings":
        t = np.sin(w * np.hypot(xx - cx, yy - cy) + phase)
    else:
        raise ValueError(name)
    return (t + 1) / 2


def _draw_shape(canvas: np.ndarray, shape: str, cx: float, cy: float, h: float, w: float,
                value: int, rng: np.random.Generator) -> None:
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    if shape in ("rect", "bar"):
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    elif shape == "triangle":
        pts = np.array([[cx, y0], [x1, y1], [x0, y1]])
    elif shape == "diamond":
        pts = np.array([[cx, y0], [x1, cy], [cx, y1], [x0, cy]])
    elif shape == "polygon":
        n = int(rng.integers(5, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.6, 1.0, n)
        pts = np.stack([cx + np.cos(ang) * rad * w / 2, cy + np.sin(ang) * rad * h / 2], 1)
    elif shape == "ellipse":
        cv2.ellipse(canvas, (int(round(cx)), int(round(cy))),
                    (max(1, int(round(w / 2))), max(1, int(round(h / 2)))), 0, 0, 360,
                    int(value), thickness=-1)
        return
    else:
        raise ValueError(shape)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], int(value))


def _random_style(rng: np.random.Generator, st: ClassStyle) -> ClassStyle:
    colour = rng.uniform(30, 225, 3)
    return ClassStyle(colour=tuple(colour), colour2=tuple(np.clip(colour + rng.normal(0, 50, 3), 0, 255)),
                      texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
                      period=float(rng.uniform(4, 20)), stuff=True, vpos=st.vpos, shape=st.shape,
                      size=st.size, aspect=st.aspect, depth=st.depth)


def render_scene(dataset: str, rng: np.random.Generator, height: int, width: int,
                 things: list[int] | None = None,
                 styles: list[ClassStyle] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic image: (RGB uint8 HxWx3, labels uint8 HxW with 255 = void, depth float32 m).

    `things` chooses the object classes (to spread classes evenly over a dataset);
    by default they are drawn at random.
    """
    spec = SPECS[dataset]
    styles = styles or class_styles(dataset)
    h, w = height, width
    scale = h / 128.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    instances = np.zeros((h, w), np.int32)   # 0.. instance ids
    inst_class: list[int] = []
    inst_depth: list[tuple[float, float]] = []

    # Stuff: wavy horizontal bands, ordered by the classes' usual height in the scene.
    stuff_ids = sorted(spec.stuff, key=lambda c: spec.stuff[c])
    n_stuff = int(rng.integers(spec.stuff_per_image[0], spec.stuff_per_image[1] + 1))
    chosen = sorted(rng.choice(stuff_ids, size=min(n_stuff, len(stuff_ids)), replace=False).tolist(),
                    key=lambda c: spec.stuff[c])
    cuts = np.sort(rng.uniform(0.15, 0.85, len(chosen) - 1)) * h
    band = np.zeros((h, w), np.int32)
    for i, cut in enumerate(cuts):
        amp = rng.uniform(0, 0.06) * h
        freq = rng.uniform(0.5, 3) * 2 * np.pi / w
        boundary = cut + amp * np.sin(freq * xx[0] + rng.uniform(0, 2 * np.pi))
        band += (yy > boundary[None, :]).astype(np.int32)
    for i, c in enumerate(chosen):
        instances[band == i] = len(inst_class)
        inst_class.append(int(c))
        far = float(rng.uniform(4.0, 8.0))
        inst_depth.append((far, far * rng.uniform(0.3, 0.6)))

    # Things, drawn back to front.
    thing_ids = [c for c in range(spec.num_classes) if c not in spec.stuff]
    if things is None:
        n = int(rng.integers(spec.things_per_image[0], spec.things_per_image[1] + 1))
        things = rng.choice(thing_ids, size=n).tolist()
    for c in things:
        st = styles[c]
        oh = rng.uniform(*st.size) * h
        ow = min(oh * st.aspect * rng.uniform(0.8, 1.25), 0.9 * w)
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.25, 0.85) * h
        mask = np.zeros((h, w), np.uint8)
        _draw_shape(mask, st.shape, cx, cy, oh, max(ow, 2.0 * scale), 1, rng)
        if not mask.any():
            continue
        instances[mask > 0] = len(inst_class)
        inst_class.append(int(c))
        d = float(rng.uniform(*st.depth))
        inst_depth.append((d, d))

    # Appearance.
    rgb = np.zeros((h, w, 3), np.float32)
    depth = np.zeros((h, w), np.float32)
    labels = np.zeros((h, w), np.uint8)
    for i, c in enumerate(inst_class):
        m = instances == i
        if not m.any():
            continue
        st = styles[c]
        if c in spec.varied:
            st = _random_style(rng, st)
        ys, xs = np.nonzero(m)
        tex = _texture(st.texture, st.period * scale, xx[m], yy[m], float(rng.uniform(0, 2 * np.pi)),
                       float(xs.mean()), float(ys.mean()))
        jitter = rng.normal(0, 10, 3)
        c1 = np.asarray(st.colour) + jitter
        c2 = np.asarray(st.colour2) + jitter
        rgb[m] = c1[None, :] * (1 - tex[:, None]) + c2[None, :] * tex[:, None]
        labels[m] = c
        top, bottom = inst_depth[i]
        rel = (yy[m] - ys.min()) / max(1.0, float(ys.max() - ys.min()))
        depth[m] = top + (bottom - top) * rel
    # Illumination gradient, blur, noise.
    gx, gy = rng.uniform(-0.25, 0.25, 2)
    light = 1 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
    rgb *= light[..., None] * rng.uniform(0.85, 1.15)
    if rng.uniform() < 0.5:
        rgb = cv2.GaussianBlur(rgb, (3, 3), 0)
    rgb += rng.normal(0, 12, rgb.shape).astype(np.float32)
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)

    # Void regions (unlabelled pixels), as in the real annotations.
    if spec.void_fraction and rng.uniform() < spec.void_fraction:
        mask = np.zeros((h, w), np.uint8)
        _draw_shape(mask, "polygon", rng.uniform(0, w), rng.uniform(0.6, 1.0) * h,
                    rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.3) * w, 1, rng)
        labels[mask > 0] = IGNORE_INDEX
    depth = depth * rng.uniform(0.9, 1.1)
    return rgb, labels, depth.astype(np.float32)


def spread_things(dataset: str, num_images: int, rng: np.random.Generator) -> list[list[int]]:
    """Object classes per image so that every thing class appears about equally often."""
    spec = SPECS[dataset]
    thing_ids = [c for c in range(spec.num_classes) if c not in spec.stuff]
    counts = rng.integers(spec.things_per_image[0], spec.things_per_image[1] + 1, num_images)
    pool: list[int] = []
    out = []
    for n in counts:
        picks = []
        for _ in range(n):
            if not pool:
                pool = rng.permutation(thing_ids).tolist()
            picks.append(pool.pop())
        out.append(picks)
    return out


def split_counts(num_images: int, fractions: dict[str, float], minimum: int = 2) -> dict[str, int]:
    """Spread `num_images` over splits by `fractions`, at least `minimum` each."""
    names = list(fractions)
    if num_images < minimum * len(names):
        raise ValueError(f"num_images must be at least {minimum * len(names)} "
                         f"({minimum} per split: {', '.join(names)}), got {num_images}")
    total = sum(fractions.values())
    counts = {k: max(minimum, int(num_images * v / total)) for k, v in fractions.items()}
    # Hand out or take back the remainder, largest splits first.
    order = sorted(names, key=lambda k: -fractions[k])
    i = 0
    while sum(counts.values()) != num_images:
        k = order[i % len(order)]
        if sum(counts.values()) < num_images:
            counts[k] += 1
        elif counts[k] > minimum:
            counts[k] -= 1
        i += 1
    return counts
