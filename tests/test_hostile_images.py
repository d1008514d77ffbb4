"""Image folders as users have them: every odd file either loads as the right picture or
stops the run before training with a message naming the file. Files made here, on the spot."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import write_images
from PIL import Image

from compactkd.data import DataError, load_dataset, split_dataset


def load(root: Path, size: int = 8, mode: str = "RGB"):  # noqa: ANN201
    return load_dataset(
        "image_folder", image_folder={"path": root, "image_size": size, "mode": mode}
    )


def jpeg_bytes(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    write_images(tmp_path / "cat", 4, (12, 12), ".png")
    write_images(tmp_path / "dog", 4, (12, 12), ".jpg")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jpg", b"", "cannot identify image file"),
        ("notes.jpg", b"shopping list: eggs, milk", "cannot identify image file"),
        ("cut.jpg", jpeg_bytes(np.full((64, 64, 3), 200, np.uint8))[:300], "[Tt]runcated"),
    ],
)
def test_a_broken_file_stops_the_load_naming_it(
    base: Path, name: str, content: bytes, message: str
) -> None:
    path = base / "dog" / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"cannot read image {path}.*{message}") as stopped:
        load(base)
    assert stopped.value.__suppress_context__  # one line, not Pillow's traceback


def test_a_decompression_bomb_is_refused(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow refuses past MAX_IMAGE_PIXELS (89 M by default); lowered here, so the bomb is
    # small to write. Between the limit and twice it Pillow only warns: refused too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for side, name in ((40, "bomb.png"), (34, "half_bomb.png")):  # 1,600 and 1,156 pixels
        path = base / "cat" / name
        Image.new("L", (side, side)).save(path)
        with pytest.raises(DataError, match=f"cannot read image {path}.*(bomb|exceeds limit)"):
            load(base)
        path.unlink()
    assert len(load(base).labels) == 8


def test_odd_but_valid_images_load_as_their_pictures(base: Path) -> None:
    """CMYK, RGBA, palette, 16-bit and grey images, 1x1 and 10000x10, all read as RGB."""
    odd = base / "odd"
    odd.mkdir()
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    (odd / "cmyk.jpg").write_bytes(jpeg_bytes(red, "CMYK"))
    Image.fromarray(np.dstack([red, np.full((16, 16), 255, np.uint8)]), "RGBA").save(
        odd / "rgba.png"
    )
    Image.fromarray(red).convert("P", palette=Image.Palette.ADAPTIVE).save(odd / "palette.gif")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(odd / "white16.png")
    Image.fromarray(np.full((16, 16), 128, np.uint8), "L").save(odd / "grey.png")
    Image.fromarray(red[:1, :1]).save(odd / "dot.png")
    Image.fromarray(np.repeat(red[:1, :1], 10000, axis=1).repeat(10, axis=0)).save(odd / "wide.png")

    raw = load(base, size=8)
    pictures = {int(i): raw.images[i] for i in np.flatnonzero(raw.labels.numpy() == 2)}
    assert len(pictures) == 7 and raw.classes == ["cat", "dog", "odd"]
    by_name = dict(zip(sorted(p.name for p in odd.iterdir()), pictures.values(), strict=True))
    for name in ("cmyk.jpg", "dot.png", "palette.gif", "rgba.png", "wide.png"):
        r, g, b = (int(by_name[name][c].float().mean()) for c in range(3))
        assert r > 230 and g < 25 and b < 25, (name, r, g, b)  # red stays red
    assert int(by_name["white16.png"].min()) == 255  # 16-bit white is white, not clipped noise
    assert {int(v) for v in by_name["grey.png"].unique()} == {128}


def test_names_with_spaces_and_non_ascii_letters_and_many_classes(tmp_path: Path) -> None:
    names = ["hot dog", "crème brûlée", "日本", *(f"class {i:03d}" for i in range(197))]
    for name in names:
        write_images(tmp_path / name, 3, (6, 6), ".png")
    raw = load(tmp_path, size=4)
    assert raw.classes == sorted(names) and len(raw.classes) == 200
    assert len(raw.labels) == 600 and raw.images.shape[1:] == (3, 4, 4)


def test_one_image_per_class_stops_at_the_split_with_the_reason(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_images(tmp_path / name, 1, (6, 6), ".png")
    raw = load(tmp_path, size=4)
    with pytest.raises(DataError, match="stratified"):
        split_dataset(raw, "image_folder", val_fraction=0.2, test_fraction=0.2)


def test_a_symlink_loop_stops_the_load_naming_it(base: Path) -> None:
    loop = base / "dog" / "loop.jpg"
    loop.symlink_to(loop)
    (base / "circle").symlink_to(base / "circle")  # a folder that is its own link: not a class
    with pytest.raises(DataError, match=f"cannot read image {loop}"):
        load(base)
    loop.unlink()
    assert load(base).classes == ["cat", "dog"]
