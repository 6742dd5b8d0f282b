"""InternVL "dynamic" image tiling and normalisation (host side, PIL + NumPy).

Follows the published InternVL chat code (`find_closest_aspect_ratio`,
`dynamic_preprocess`, `build_transform`, `load_image`):

1. Candidate grids: every (rows, cols) with min_num <= rows*cols <= max_num, in
   increasing order of area.
2. Pick the grid whose cols/rows is closest to the image's width/height. On an exact tie
   the later (larger) grid wins when the image area exceeds 0.5 * size^2 * rows*cols,
   i.e. when the image has enough pixels to fill at least half of the bigger grid.
3. Resize (PIL bicubic) to (size*cols, size*rows), cut rows*cols tiles of size x size in
   row-major order; when more than one tile and use_thumbnail, append the whole image
   resized to size x size.
4. Per tile: RGB, resize to size x size (bicubic; an identity on tiles that already have
   that size), /255, (x - mean) / std in float32, exactly like torchvision's
   ToTensor + Normalize.

Output layout is channels-last [tiles, size, size, 3] float32 (PyTorch uses [tiles, 3, H, W]).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence, Union

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageSource = Union[str, os.PathLike, Image.Image]


class ImageError(ValueError):
    """A missing, unreadable or corrupt image; the message names the path."""


@dataclasses.dataclass(frozen=True)
class TilingConfig:
    """How images become tiles. Defaults are R1V2's (`force_image_size`, `*_dynamic_patch`)."""

    image_size: int = 448
    min_num: int = 1
    max_num: int = 12
    use_thumbnail: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.image_size < 1:
            raise ValueError(f"TilingConfig.image_size must be >= 1, got {self.image_size}")
        if not 1 <= self.min_num <= self.max_num:
            raise ValueError(
                f"TilingConfig needs 1 <= min_num <= max_num, got min_num={self.min_num}, "
                f"max_num={self.max_num}"
            )

    def num_tiles(self, width: int, height: int) -> int:
        """Tiles an image of this size becomes (thumbnail included)."""
        rows, cols = choose_grid(width, height, image_size=self.image_size,
                                 min_num=self.min_num, max_num=self.max_num)
        return rows * cols + (1 if self.use_thumbnail and rows * cols != 1 else 0)


def candidate_grids(min_num: int, max_num: int) -> list[tuple[int, int]]:
    """(rows, cols) with min_num <= rows*cols <= max_num, sorted by area.

    The reference sorts a Python set of (cols, rows) by area; a stable sort of that same
    set keeps its iteration order among equal areas, which decides the (rare) ties between
    two grids of equal area, so it is reproduced here rather than re-ordered.
    """
    col_row = {
        (c, r)
        for n in range(min_num, max_num + 1)
        for c in range(1, n + 1)
        for r in range(1, n + 1)
        if min_num <= c * r <= max_num
    }
    return [(r, c) for c, r in sorted(col_row, key=lambda cr: cr[0] * cr[1])]


def choose_grid(width: int, height: int, *, image_size: int = 448, min_num: int = 1,
                max_num: int = 12) -> tuple[int, int]:
    """The (rows, cols) tiling grid InternVL picks for a width x height image."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for rows, cols in candidate_grids(min_num, max_num):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (rows, cols), diff
        elif diff == best_diff and area > 0.5 * image_size * image_size * rows * cols:
            best = (rows, cols)
    return best


def open_image(source: ImageSource) -> Image.Image:
    """Opens and fully decodes an image as RGB; errors name the path."""
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ImageError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, not hours later
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"cannot read image {path}: {err}") from err


def image_size_of(source: ImageSource, *, decode: bool = True) -> tuple[int, int]:
    """(width, height). With `decode`, the whole image is decoded so that a corrupt or
    truncated file is caught now; without, only the header is read (fast, weaker)."""
    if decode or isinstance(source, Image.Image):
        return open_image(source).size
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ImageError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"cannot read image {path}: {err}") from err


def dynamic_tiles(image: Image.Image, *, image_size: int = 448, min_num: int = 1,
                  max_num: int = 12, use_thumbnail: bool = True) -> list[Image.Image]:
    """The PIL tiles (row-major, thumbnail last) of one RGB image."""
    rows, cols = choose_grid(*image.size, image_size=image_size, min_num=min_num,
                             max_num=max_num)
    resized = image.resize((image_size * cols, image_size * rows), Image.Resampling.BICUBIC)
    tiles = []
    for r in range(rows):
        for c in range(cols):
            box = (c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size)
            tiles.append(resized.crop(box))
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size), Image.Resampling.BICUBIC))
    return tiles


def normalize_tile(tile: Image.Image, *, image_size: int,
                   mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """RGB -> bicubic resize -> /255 -> (x - mean) / std, float32 [H, W, 3]."""
    if tile.mode != "RGB":
        tile = tile.convert("RGB")
    if tile.size != (image_size, image_size):
        tile = tile.resize((image_size, image_size), Image.Resampling.BICUBIC)
    # float32 throughout, like ToTensor/Normalize, so results match to float rounding
    x = np.asarray(tile, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def load_image(source: ImageSource, *, image_size: int = 448, min_num: int = 1,
               max_num: int = 12, use_thumbnail: bool = True,
               mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """One image -> float32 [tiles, image_size, image_size, 3]."""
    image = open_image(source)
    tiles = dynamic_tiles(image, image_size=image_size, min_num=min_num, max_num=max_num,
                          use_thumbnail=use_thumbnail)
    return np.stack([normalize_tile(t, image_size=image_size, mean=mean, std=std)
                     for t in tiles])


@dataclasses.dataclass(frozen=True)
class PreprocessedImages:
    """The tiles of all images of one prompt, concatenated in image order."""

    pixel_values: np.ndarray  # float32 [sum(num_tiles), size, size, 3]
    num_tiles: tuple[int, ...]  # tiles of each image, in order


def preprocess_images(sources: Sequence[ImageSource],
                      config: TilingConfig = TilingConfig()) -> PreprocessedImages:
    """Tiles every image of a prompt with `config`; zero images give a [0, s, s, 3] array."""
    s = config.image_size
    per_image = [
        load_image(src, image_size=s, min_num=config.min_num, max_num=config.max_num,
                   use_thumbnail=config.use_thumbnail, mean=config.mean, std=config.std)
        for src in sources
    ]
    if not per_image:
        return PreprocessedImages(np.zeros((0, s, s, 3), np.float32), ())
    return PreprocessedImages(np.concatenate(per_image), tuple(len(p) for p in per_image))
