"""A deterministic generator of frn-det's embedded COCO-format instance segmentation
dataset: textured circles, squares, triangles and stars that overlap one another on
textured backgrounds.

Every image is drawn from its own random stream, seeded by (seed, split, index), so the
same seed gives byte-identical images and json, and a smaller dataset is a prefix of a
larger one. Masks are the visible part of each object after occlusion, stored as
polygons (detectron2's default INPUT.MASK_FORMAT); layouts whose visible parts a polygon
cannot describe (holes) are redrawn.

Pre-generate from the command line (otherwise the first DatasetCatalog.get does it)::

    python -m frn_det.data.shapes --root datasets --num-train 600 --num-val 100 --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import numbers
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import contourpy
import numpy as np
from detectron2.data.datasets import load_coco_json
from PIL import Image, ImageDraw
from pycocotools import mask as mask_util

from .shapes_layout import (
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    SHAPES_CLASSES,
    shapes_annotation_file,
    shapes_dir,
    shapes_image_root,
)

__all__ = [
    "GENERATOR_VERSION",
    "ShapesDatasetError",
    "ShapesScene",
    "ensure_shapes_dataset",
    "generate_shapes_dataset",
    "load_shapes_split",
    "render_shapes_image",
    "shapes_main",
]

logger = logging.getLogger(__name__)

# Bump when a change to the drawing changes the output: caches written by another
# version are regenerated on their next load.
GENERATOR_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
DATASETS_DOC = "datasets.md"

IMAGE_SIDE_RANGE = (160, 256)  # height and width drawn independently, inclusive
OBJECT_DIAMETER_RANGE = (24, 96)  # diameter of the circle around each shape
OBJECTS_PER_IMAGE_RANGE = (1, 5)
# Below these, an occluded object is too hidden to be a fair target.
MIN_VISIBLE_FRACTION = 0.4
MIN_VISIBLE_AREA = 150
# Polygons are simplified within this many pixels, then rasterized back and compared with
# the visible pixels; a layout whose polygons miss them by more is redrawn.
POLYGON_TOLERANCE = 0.6
MIN_POLYGON_IOU = 0.9
OCCLUDE_PROBABILITY = 0.5
PLACEMENT_TRIES = 30
_SPLIT_CODES = {"train": 0, "val": 1}


class ShapesDatasetError(RuntimeError):
    """The shapes dataset cannot be written or what is on disk is not a usable dataset."""


@dataclass(frozen=True)
class ShapesScene:
    """One drawn image and its objects, back to front.

    image: (H, W, 3) uint8 RGB.
    category_ids: (N,) COCO category ids, 1-based indices into SHAPES_CLASSES.
    full_masks: (N, H, W) bool, each object's whole shape.
    visible_masks: (N, H, W) bool, the part of each shape not hidden by later objects.
    polygons: per object, the COCO polygons [x0, y0, x1, y1, ...] of its visible part.
    """

    image: np.ndarray
    category_ids: list[int]
    full_masks: np.ndarray
    visible_masks: np.ndarray
    polygons: list[list[list[float]]]


def render_shapes_image(seed: int, split: str, index: int) -> ShapesScene:
    """Draw image ``index`` of ``split`` ("train" or "val") for ``seed``; the same
    arguments always give the same scene."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    height, width = (int(v) for v in rng.integers(*_inclusive(IMAGE_SIDE_RANGE), size=2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    bg_colors = _color_pair(rng, spread=80.0)
    image = _texture(rng, xx, yy, *bg_colors)
    objects: list[tuple[int, np.ndarray]] = []  # (category id, full mask)
    colors: list[np.ndarray] = [bg_colors[0]]
    visible: list[np.ndarray] = []
    polygons: list[list[list[float]]] = []
    num_objects = int(rng.integers(*_inclusive(OBJECTS_PER_IMAGE_RANGE)))
    for _ in range(num_objects):
        for _ in range(PLACEMENT_TRIES):
            category_id = int(rng.integers(1, len(SHAPES_CLASSES) + 1))
            shape = SHAPES_CLASSES[category_id - 1]
            mask = _draw_shape(rng, shape, [m for _, m in objects], height, width)
            accepted = _visible_polygons([m for _, m in objects] + [mask])
            if accepted is not None:
                objects.append((category_id, mask))
                visible, polygons = accepted
                break
        else:
            continue  # this image simply gets fewer objects
        obj_colors = _distinct_color_pair(rng, colors)
        colors.append(obj_colors[0])
        # Texture only the object's box: most of the time goes into drawing noise.
        rows, cols = np.nonzero(objects[-1][1])
        box = np.s_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        mask = objects[-1][1][box]
        image[box][mask] = _texture(rng, xx[box], yy[box], *obj_colors)[mask]

    full = np.stack([m for _, m in objects]) if objects else np.zeros((0, height, width), bool)
    return ShapesScene(
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
        category_ids=[c for c, _ in objects],
        full_masks=full,
        visible_masks=np.stack(visible) if visible else np.zeros_like(full),
        polygons=polygons,
    )


def generate_shapes_dataset(
    root: str | os.PathLike | None = None,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Write the dataset to ``<root>/frn_shapes`` (see ``datasets_root``), replacing any
    dataset already there, and return that folder.

    Everything is written into a temporary sibling folder and renamed into place with the
    manifest already inside, so an interrupted run never leaves a complete-looking dataset.
    """
    _check_counts(num_train, num_val, seed)
    final = shapes_dir(root)
    parent = final.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ShapesDatasetError(
            f"Cannot write the shapes dataset under {parent}: {blocker} is a file, not a "
            f"folder. Point DETECTRON2_DATASETS (or --root) at a folder; see {DATASETS_DOC}."
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # Not tempfile.mkdtemp: its 0o700 mode would become the dataset's after the rename.
        tmp = parent / f".{final.name}-partial-{uuid.uuid4().hex}"
        tmp.mkdir()
    except OSError as e:
        raise ShapesDatasetError(
            f"Cannot write the shapes dataset under {parent}: {e}. Point DETECTRON2_DATASETS "
            f"(or --root) at a writable folder; see {DATASETS_DOC}."
        ) from e

    started = time.perf_counter()
    logger.info(
        "Generating the frn_shapes dataset (%d train, %d val images, seed %d) in %s",
        num_train,
        num_val,
        seed,
        final,
    )
    try:
        for split, count in (("train", num_train), ("val", num_val)):
            _write_split(tmp, split, count, seed)
        manifest = _manifest(num_train, num_val, seed)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, sort_keys=True) + "\n")
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Generated %s in %.1f s", final, time.perf_counter() - started)
    return final


def _check_counts(num_train: object, num_val: object, seed: object) -> None:
    """Raise ValueError naming the argument unless the counts are integers >= 1 and the
    seed an integer >= 0 (numpy's generator refuses a negative one, mid-generation)."""
    for name, value, minimum, what in (
        ("num_train", num_train, 1, "a positive number of images"),
        ("num_val", num_val, 1, "a positive number of images"),
        ("seed", seed, 0, "an integer >= 0"),
    ):
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not integral or value < minimum:
            shown = repr(value) if integral else f"{type(value).__name__} {value!r}"
            raise ValueError(f"{name} must be {what}, got {shown}")


def ensure_shapes_dataset(
    root: str | os.PathLike | None = None,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Return ``<root>/frn_shapes``, generating it first when it is not there.

    A complete dataset on disk is used as it is, whatever counts and seed it was made
    with; one written by another GENERATOR_VERSION is regenerated with its own counts and
    seed. The counts and seed given here only apply when nothing is there yet.
    """
    manifest = _read_manifest(shapes_dir(root))
    if manifest is None:
        return generate_shapes_dataset(root, num_train, num_val, seed)
    if manifest["generator_version"] != GENERATOR_VERSION:
        logger.info(
            "%s was written by generator version %s, this is %d: regenerating it",
            shapes_dir(root),
            manifest["generator_version"],
            GENERATOR_VERSION,
        )
        return generate_shapes_dataset(
            root, manifest["num_train"], manifest["num_val"], manifest["seed"]
        )
    return shapes_dir(root)


def load_shapes_split(
    split: str,
    root: str | os.PathLike | None = None,
    dataset_name: str | None = None,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
) -> list[dict]:
    """Detectron2 dataset dicts of one split, generating the dataset first if needed.

    This is what ``frn_shapes_train`` / ``frn_shapes_val`` run in DatasetCatalog.get.
    """
    ensure_shapes_dataset(root, num_train, num_val, seed)
    json_file = shapes_annotation_file(split, root)
    _check_annotation_file(json_file)
    return load_coco_json(str(json_file), str(shapes_image_root(split, root)), dataset_name)


def shapes_main(argv: Sequence[str] | None = None) -> int:
    """``python -m frn_det.data.shapes``: pre-generate the dataset (skipped when the same
    one is already there)."""
    parser = argparse.ArgumentParser(
        prog="python -m frn_det.data.shapes",
        description="Generate frn-det's embedded shapes dataset (COCO format). "
        f"See {DATASETS_DOC}.",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="datasets folder; the dataset goes to ROOT/frn_shapes "
        "(default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN, metavar="N")
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL, metavar="N")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="S")
    args = parser.parse_args(argv)
    try:
        _check_counts(args.num_train, args.num_val, args.seed)
    except ValueError as e:
        # Name the flag, as argparse does, rather than the function argument.
        flag = "--" + str(e).split(" ", 1)[0].replace("_", "-")
        parser.error(f"argument {flag}: {str(e).split(' ', 1)[1]}")

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = shapes_dir(args.root)
    wanted = _manifest(args.num_train, args.num_val, args.seed)
    try:
        if _read_manifest(target) == wanted:
            print(f"{target} already holds this dataset; nothing to do.")
            return 0
        generate_shapes_dataset(args.root, args.num_train, args.num_val, args.seed)
    except (ShapesDatasetError, ValueError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {target}")
    return 0


def _inclusive(bounds: tuple[int, int]) -> tuple[int, int]:
    return bounds[0], bounds[1] + 1


def _color_pair(rng: np.random.Generator, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """A base colour and a second one within ``spread`` of it per channel; (3,) float32."""
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    other = np.clip(base + rng.uniform(-spread, spread, size=3), 0, 255).astype(np.float32)
    return base, other


def _distinct_color_pair(
    rng: np.random.Generator, taken: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    # An object the same colour as the background or a neighbour has no visible edge, and
    # a target nobody could see only slows learning down.
    pair = _color_pair(rng, spread=50.0)
    for _ in range(100):
        if all(np.linalg.norm(pair[0] - c) >= 90.0 for c in taken):
            break
        pair = _color_pair(rng, spread=50.0)
    return pair


def _texture(
    rng: np.random.Generator,
    xx: np.ndarray,
    yy: np.ndarray,
    color_a: np.ndarray,
    color_b: np.ndarray,
) -> np.ndarray:
    """A (H, W, 3) float32 texture from two colours: flat, stripes, gradient or blotches,
    plus per-pixel noise. ``xx``, ``yy``: (H, W) pixel coordinates."""
    height, width = xx.shape
    kind = int(rng.integers(4))
    angle = rng.uniform(0, np.pi)
    along = xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle))
    if kind == 0:
        t = np.zeros_like(xx)
    elif kind == 1:
        half_period = np.float32(rng.uniform(3, 8))
        t = np.floor(along / half_period) % 2
    elif kind == 2:
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    else:
        coarse = rng.random((height // 16 + 2, width // 16 + 2)).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    mixed = color_a * (1 - t)[..., None] + color_b * t[..., None]
    sigma = np.float32(rng.uniform(0, 10))
    return mixed + sigma * rng.standard_normal(size=mixed.shape, dtype=np.float32)


def _draw_shape(
    rng: np.random.Generator, shape: str, placed: list[np.ndarray], height: int, width: int
) -> np.ndarray:
    """The (H, W) bool mask of a randomly sized and turned ``shape`` inside the image,
    often overlapping one of the ``placed`` (H, W) masks so that occlusion is common."""
    radius = rng.uniform(*OBJECT_DIAMETER_RANGE) / 2
    lo = np.array([radius, radius])
    hi = np.array([width - radius, height - radius])
    if placed and rng.random() < OCCLUDE_PROBABILITY:
        rows, cols = np.nonzero(placed[int(rng.integers(len(placed)))])
        other_center = np.array([cols.mean(), rows.mean()])
        other_radius = np.sqrt(len(rows) / np.pi)
        direction = rng.uniform(0, 2 * np.pi)
        distance = rng.uniform(0.3, 1.0) * (radius + other_radius)
        offset = distance * np.array([np.cos(direction), np.sin(direction)])
        center = np.clip(other_center + offset, lo, hi)
    else:
        center = rng.uniform(lo, hi)
    vertices = _shape_vertices(shape, radius, rng.uniform(0, 2 * np.pi), rng) + center
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([tuple(v) for v in vertices.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _shape_vertices(
    shape: str, radius: float, angle: float, rng: np.random.Generator
) -> np.ndarray:
    """(K, 2) x, y vertices of ``shape`` centred on 0, inside a circle of ``radius``."""
    if shape == "circle":
        count, radii = 64, np.array([radius])
    elif shape == "square":
        count, radii = 4, np.array([radius])
    elif shape == "triangle":
        count, radii = 3, np.array([radius])
    elif shape == "star":
        count, radii = 10, np.array([radius, radius * rng.uniform(0.38, 0.55)])
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES_CLASSES}")
    angles = angle + np.arange(count) * (2 * np.pi / count)
    r = np.resize(radii, count)
    return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)


def _visible_polygons(
    full_masks: list[np.ndarray],
) -> tuple[list[np.ndarray], list[list[list[float]]]] | None:
    """Visible (H, W) bool masks and their COCO polygons for (H, W) masks listed back to
    front, or None when some object is too hidden or its visible part is not described
    well by polygons."""
    covered = np.zeros_like(full_masks[0])
    visible: list[np.ndarray] = []
    for mask in reversed(full_masks):
        visible.append(mask & ~covered)
        covered |= mask
    visible.reverse()

    all_polygons = []
    for full, vis in zip(full_masks, visible, strict=True):
        area = int(vis.sum())
        if area < MIN_VISIBLE_AREA or area < MIN_VISIBLE_FRACTION * full.sum():
            return None
        polygons = _mask_to_polygons(vis)
        if not polygons:
            return None
        drawn = _polygons_to_mask(polygons, *vis.shape)
        iou = np.logical_and(drawn, vis).sum() / np.logical_or(drawn, vis).sum()
        if iou < MIN_POLYGON_IOU:
            return None
        all_polygons.append(polygons)
    return visible, all_polygons


def _mask_to_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """COCO polygons [x0, y0, x1, y1, ...] tracing an (H, W) bool mask, or None when it
    has a hole (COCO polygons are filled, so they cannot describe one)."""
    # Padding closes the outline of shapes that touch the border; the 0.5 level runs along
    # pixel edges between a pixel inside and one outside.
    padded = np.pad(mask, 1).astype(np.float64)
    generator = contourpy.contour_generator(z=padded, fill_type=contourpy.FillType.OuterOffset)
    points, offsets = generator.filled(0.5, 1.5)
    polygons = []
    for outline, rings in zip(points, offsets, strict=True):
        if len(rings) > 2:
            return None
        # contourpy repeats the first point at the end; grid index j of the padded array
        # is the centre of pixel j - 1, which COCO puts at x = j - 0.5.
        ring = _simplify_ring(outline[:-1] - 0.5, POLYGON_TOLERANCE)
        if len(ring) >= 3:
            polygons.append([round(float(v), 2) for v in ring.ravel()])
    return polygons


def _simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Drop vertices of a closed (K, 2) outline that lie within ``tolerance`` pixels of
    the simplified one (Ramer-Douglas-Peucker); the pixel staircase otherwise costs a
    vertex per boundary pixel."""
    far = int(np.argmax(np.linalg.norm(ring - ring[0], axis=1)))
    if far == 0:
        return ring
    first = _simplify_chain(ring[: far + 1], tolerance)
    second = _simplify_chain(np.concatenate([ring[far:], ring[:1]]), tolerance)
    return np.concatenate([first[:-1], second[:-1]])


def _simplify_chain(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer-Douglas-Peucker on an open (K, 2) chain; keeps both ends."""
    keep = np.zeros(len(points), dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, len(points) - 1)]
    while stack:
        start, end = stack.pop()
        if end - start < 2:
            continue
        chord = points[end] - points[start]
        offsets = points[start + 1 : end] - points[start]
        length = float(np.hypot(*chord))
        if length > 0:
            distances = np.abs(chord[0] * offsets[:, 1] - chord[1] * offsets[:, 0]) / length
        else:
            distances = np.hypot(offsets[:, 0], offsets[:, 1])
        worst = int(np.argmax(distances))
        if distances[worst] > tolerance:
            split = start + 1 + worst
            keep[split] = True
            stack += [(start, split), (split, end)]
    return points[keep]


def _polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """(H, W) bool mask that pycocotools (and so COCO evaluation) draws for ``polygons``."""
    rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    return mask_util.decode(rle).astype(bool)


def _write_split(folder: Path, split: str, count: int, seed: int) -> None:
    """Write ``count`` PNGs to ``folder/<split>/`` and their COCO json to
    ``folder/annotations/instances_<split>.json``."""
    image_dir = folder / split
    image_dir.mkdir()
    images, annotations = [], []
    for index in range(count):
        scene = render_shapes_image(seed, split, index)
        height, width = scene.image.shape[:2]
        file_name = f"{index:06d}.png"
        Image.fromarray(scene.image).save(image_dir / file_name, format="PNG")
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for category_id, polygons in zip(scene.category_ids, scene.polygons, strict=True):
            rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": polygons,
                    "area": float(mask_util.area(rle)),
                    "bbox": [float(v) for v in mask_util.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {
            "description": "frn-det embedded shapes dataset",
            "version": str(GENERATOR_VERSION),
            "seed": seed,
            "split": split,
        },
        "licenses": [],
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(SHAPES_CLASSES)
        ],
        "images": images,
        "annotations": annotations,
    }
    json_file = folder / "annotations" / f"instances_{split}.json"
    json_file.parent.mkdir(exist_ok=True)
    json_file.write_text(json.dumps(coco, separators=(",", ":")))


def _manifest(num_train: int, num_val: int, seed: int) -> dict[str, int]:
    return {
        "generator_version": GENERATOR_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "seed": seed,
    }


def _read_manifest(folder: Path) -> dict[str, int] | None:
    """The manifest of a complete dataset in ``folder``, None when there is no folder."""
    if not folder.exists():
        return None
    path = folder / MANIFEST_NAME
    hint = f"Delete {folder} to have it regenerated; see {DATASETS_DOC}."
    if not path.is_file():
        raise ShapesDatasetError(
            f"{folder} exists but has no {MANIFEST_NAME}, so it is not a dataset written by "
            f"frn_det.data.shapes (which writes that file last). {hint}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShapesDatasetError(f"{path} cannot be read as JSON: {e}. {hint}") from e
    expected = set(_manifest(0, 0, 0))
    if not isinstance(manifest, dict) or set(manifest) != expected:
        raise ShapesDatasetError(
            f"{path} should be a JSON object with keys {sorted(expected)}, got {manifest!r}. {hint}"
        )
    return manifest


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder to ``final``, replacing an older dataset."""
    stale = None
    if final.exists():
        stale = final.with_name(f".{final.name}-stale-{uuid.uuid4().hex}")
        os.replace(final, stale)
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process (e.g. another training worker) installed a dataset in between.
        # Generation is deterministic, so an identical one can be kept and ours dropped.
        if _read_manifest(final) != _read_manifest(tmp):
            raise
        shutil.rmtree(tmp)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def _check_annotation_file(json_file: Path) -> None:
    """Raise ShapesDatasetError naming ``json_file`` unless it is a COCO json of the shapes
    classes."""
    hint = f"Delete {json_file.parent.parent} to have it regenerated; see {DATASETS_DOC}."
    try:
        coco = json.loads(json_file.read_text())
    except OSError as e:
        raise ShapesDatasetError(f"Cannot read {json_file}: {e}. {hint}") from e
    except ValueError as e:
        raise ShapesDatasetError(f"{json_file} is not valid JSON: {e}. {hint}") from e
    keys = ("images", "annotations", "categories")
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in keys):
        raise ShapesDatasetError(
            f"{json_file} is not a COCO annotation file: it needs the lists {keys}. {hint}"
        )
    categories = [(c.get("id"), c.get("name")) for c in coco["categories"]]
    expected = [(i + 1, name) for i, name in enumerate(SHAPES_CLASSES)]
    if categories != expected:
        raise ShapesDatasetError(
            f"{json_file} has categories {categories}, expected {expected}. {hint}"
        )


if __name__ == "__main__":
    sys.exit(shapes_main())
