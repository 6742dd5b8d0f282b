"""InternVL tiling against an independent re-implementation of the published algorithm."""

import numpy as np
import pytest
import torch
from PIL import Image

from r1v2_jax.data import image as im

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ---- reference: InternVL's chat code, re-written with PIL + NumPy/torch (ratios are (w, h))
def ref_closest_ratio(aspect, ratios, width, height, size):
    best_diff, best = float("inf"), (1, 1)
    for w, h in ratios:
        diff = abs(aspect - w / h)
        if diff < best_diff:
            best_diff, best = diff, (w, h)
        elif diff == best_diff and width * height > 0.5 * size * size * w * h:
            best = (w, h)
    return best


def ref_dynamic_preprocess(img, min_num, max_num, size, use_thumbnail):
    width, height = img.size
    ratios = sorted({(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1)
                     for j in range(1, n + 1) if min_num <= i * j <= max_num},
                    key=lambda r: r[0] * r[1])
    w, h = ref_closest_ratio(width / height, ratios, width, height, size)
    resized = img.resize((size * w, size * h))  # PIL default resample (bicubic for RGB)
    tiles = []
    for k in range(w * h):
        x, y = (k % w) * size, (k // w) * size
        tiles.append(resized.crop((x, y, x + size, y + size)))
    if use_thumbnail and len(tiles) != 1:
        tiles.append(img.resize((size, size)))
    return (h, w), tiles


def ref_transform(tile, size):
    # torchvision: Resize((s, s), BICUBIC) on PIL, ToTensor, Normalize, as torch ops
    tile = tile.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.array(tile)).permute(2, 0, 1).float().div(255)
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return x.permute(1, 2, 0).numpy()


def ref_load(img, size, min_num=1, max_num=12, use_thumbnail=True):
    grid, tiles = ref_dynamic_preprocess(img.convert("RGB"), min_num, max_num, size,
                                         use_thumbnail)
    return grid, np.stack([ref_transform(t, size) for t in tiles])


def random_image(w, h, seed):
    rng = np.random.default_rng(seed)
    # smooth + noise so that bicubic resampling is exercised on real structure
    base = rng.integers(0, 256, (max(h // 4, 1), max(w // 4, 1), 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
    noise = rng.integers(-20, 21, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, int) + noise, 0, 255).astype(np.uint8))


SIZES = [(56, 56), (112, 56), (56, 112), (300, 40), (40, 300), (100, 77), (77, 100),
         (1, 50), (50, 1), (13, 200), (160, 90), (90, 160), (250, 250), (121, 40), (84, 28)]


@pytest.mark.parametrize("wh", SIZES)
@pytest.mark.parametrize("size,min_num,max_num", [(28, 1, 12), (56, 1, 6), (28, 2, 4)])
def test_matches_reference_pixels(wh, size, min_num, max_num):
    img = random_image(*wh, seed=wh[0] * 1000 + wh[1])
    grid, ref = ref_load(img, size, min_num, max_num)
    assert im.choose_grid(*wh, image_size=size, min_num=min_num, max_num=max_num) == grid
    out = im.load_image(img, image_size=size, min_num=min_num, max_num=max_num)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert out.shape[1:] == (size, size, 3)
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)


def test_grid_choice_matches_reference_on_many_shapes():
    for size in (448, 28):
        for w in range(1, 4000, 37):
            for h in (1, 7, 100, 448, 600, 1000, 1500, 2900):
                ratios = sorted({(i, j) for n in range(1, 13) for i in range(1, n + 1)
                                 for j in range(1, n + 1) if i * j <= 12},
                                key=lambda r: r[0] * r[1])
                cw, ch = ref_closest_ratio(w / h, ratios, w, h, size)
                assert im.choose_grid(w, h, image_size=size) == (ch, cw), (w, h, size)


def test_tie_rule_hand_computed():
    # square images: (1,1), (2,2), (3,3) tie on aspect; a larger grid wins only when the
    # image area exceeds half of that grid's area
    assert im.choose_grid(448, 448) == (1, 1)
    assert im.choose_grid(800, 800) == (2, 2)  # 640000 > 0.5*448^2*4 = 401408
    assert im.choose_grid(1000, 1000) == (3, 3)  # 1e6 > 0.5*448^2*9 = 903168
    assert im.choose_grid(896, 448) == (1, 2)  # rows, cols
    assert im.choose_grid(448, 1344) == (3, 1)
    assert im.choose_grid(448, 448, min_num=2, max_num=2) in {(1, 2), (2, 1)}
    assert im.choose_grid(5000, 10, max_num=6) == (1, 6)


def test_tiles_are_row_major_and_thumbnail_last():
    # a 2x3 grid image whose cells are constant colours: tile k must be cell k (row-major)
    s = 28
    colours = np.arange(6 * 3).reshape(6, 3) * 12
    arr = np.zeros((2 * s, 3 * s, 3), np.uint8)
    for k, c in enumerate(colours):
        r, q = divmod(k, 3)
        arr[r * s:(r + 1) * s, q * s:(q + 1) * s] = c
    out = im.load_image(Image.fromarray(arr), image_size=s, max_num=6)
    assert out.shape == (7, s, s, 3)
    for k, c in enumerate(colours):  # centre pixel, away from bicubic ringing at edges
        want = (c / 255.0 - np.array(MEAN)) / np.array(STD)
        np.testing.assert_allclose(out[k, s // 2, s // 2], want, atol=1e-5)
    assert im.load_image(Image.fromarray(arr), image_size=s, max_num=6,
                         use_thumbnail=False).shape[0] == 6


def test_normalisation_hand_computed():
    img = Image.new("RGB", (30, 30), (255, 0, 128))
    out = im.load_image(img, image_size=30)
    want = np.array([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225])
    assert out.shape == (1, 30, 30, 3)
    np.testing.assert_allclose(out.reshape(-1, 3), np.broadcast_to(want, (900, 3)), atol=1e-6)


def test_non_rgb_inputs_are_converted(tmp_path):
    grey = Image.fromarray(np.full((20, 40), 100, np.uint8), mode="L")
    path = tmp_path / "g.png"
    grey.save(path)
    out = im.load_image(path, image_size=20)
    assert out.shape == (3, 20, 20, 3)  # 1x2 grid + thumbnail
    np.testing.assert_allclose(out[0, 5, 5], (100 / 255 - np.array(MEAN)) / np.array(STD),
                               atol=1e-6)


def test_preprocess_images_concatenates_and_counts(tmp_path):
    a, b = random_image(56, 56, 1), random_image(112, 56, 2)
    cfg = im.TilingConfig(image_size=28, max_num=4)
    res = im.preprocess_images([a, b], cfg)
    ta, tb = (im.load_image(x, image_size=28, max_num=4) for x in (a, b))
    assert res.num_tiles == (len(ta), len(tb)) == (5, 3)
    np.testing.assert_array_equal(res.pixel_values, np.concatenate([ta, tb]))
    assert cfg.num_tiles(56, 56) == 5 and cfg.num_tiles(112, 56) == 3
    empty = im.preprocess_images([], cfg)
    assert empty.pixel_values.shape == (0, 28, 28, 3) and empty.num_tiles == ()


def test_missing_and_corrupt_images_name_the_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(im.ImageError, match="nope.png"):
        im.load_image(missing)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(im.ImageError, match="junk.png"):
        im.load_image(junk)
    good = tmp_path / "good.png"
    random_image(64, 64, 3).save(good)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(im.ImageError, match="trunc.png"):
        im.image_size_of(truncated)
    assert im.image_size_of(truncated, decode=False) == (64, 64)  # header alone is fine


def test_bad_tiling_config():
    with pytest.raises(ValueError, match="min_num"):
        im.TilingConfig(min_num=3, max_num=2)
