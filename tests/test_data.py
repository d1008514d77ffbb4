"""Datasets by name, splits, statistics, augmentation and the errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import write_images

from compactkd.data import (
    DataError,
    RawDataset,
    channel_stats,
    dataset_card,
    load_dataset,
    make_loader,
    split_dataset,
)


def numbered_dataset(per_class: tuple[int, ...]) -> RawDataset:
    """Each image carries its own index in two pixels, so splits can be traced back."""
    n = sum(per_class)
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256
    images[:, 0, 0, 1] = torch.arange(n) // 256
    images[:, 0, 1:, :] = torch.randint(
        0, 256, (n, 3, 4), generator=torch.Generator().manual_seed(0)
    )
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(per_class)])
    return RawDataset(images, labels, [f"c{k}" for k in range(len(per_class))], "synthetic")


def indices_of(part: dict) -> list[int]:
    images = part["images"].long()
    return (images[:, 0, 0, 0] + 256 * images[:, 0, 0, 1]).tolist()


def test_splits_are_stratified_disjoint_complete_and_reproducible() -> None:
    raw = numbered_dataset((300, 200, 100))
    splits = split_dataset(raw, "synthetic", val_fraction=0.1, test_fraction=0.2, seed=3)
    ids = {name: indices_of(splits[name]) for name in ("train", "val", "test")}
    assert sorted(ids["train"] + ids["val"] + ids["test"]) == list(range(600))
    assert [len(ids[name]) for name in ("train", "val", "test")] == [432, 48, 120]
    for name, fraction in (("test", 0.2), ("val", 0.08), ("train", 0.72)):
        counts = torch.bincount(splits[name]["labels"], minlength=3).tolist()
        expected = [fraction * c for c in (300, 200, 100)]
        assert all(abs(c - e) <= 1 for c, e in zip(counts, expected, strict=True)), name
    again = split_dataset(raw, "synthetic", val_fraction=0.1, test_fraction=0.2, seed=3)
    assert indices_of(again["val"]) == ids["val"]
    other = split_dataset(raw, "synthetic", val_fraction=0.1, test_fraction=0.2, seed=4)
    assert indices_of(other["val"]) != ids["val"]


def test_official_test_split_is_kept_and_statistics_come_from_train_only() -> None:
    raw = numbered_dataset((50, 50))
    raw.test_images = torch.full((10, 1, 4, 4), 255, dtype=torch.uint8)
    raw.test_labels = torch.tensor([0, 1] * 5)
    splits = split_dataset(raw, "synthetic", val_fraction=0.2)
    assert torch.equal(splits["test"]["images"], raw.test_images)
    assert len(splits["train"]["labels"]) + len(splits["val"]["labels"]) == 100
    mean, std = channel_stats(splits["train"]["images"])
    assert splits["mean"] == mean and splits["std"] == std
    assert splits["mean"][0] < 0.9  # the all-white test images did not leak into it


def test_train_batches_are_normalised(digits_splits: dict) -> None:
    loader = make_loader(digits_splits, "train", batch_size=10_000)
    images, labels = next(loader.batches())
    assert images.shape[1:] == (1, 8, 8) and labels.dtype == torch.int64
    assert abs(float(images.mean())) < 1e-4
    assert abs(float(images.std()) - 1) < 1e-2


def test_augmentation_is_seeded_and_keeps_shapes() -> None:
    raw = numbered_dataset((40, 40))
    splits = split_dataset(raw, "synthetic", augmentation={"crop_padding": 2, "hflip": True})
    loader = make_loader(splits, "train", batch_size=16, augment=True)
    first = [b for b, _ in loader.batches(torch.Generator().manual_seed(1))]
    again = [b for b, _ in loader.batches(torch.Generator().manual_seed(1))]
    other = [b for b, _ in loader.batches(torch.Generator().manual_seed(2))]
    plain = torch.cat([b for b, _ in make_loader(splits, "train", 16).batches()])
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert torch.cat(first).shape == plain.shape
    assert sum(len(lbl) for _, lbl in loader.batches(torch.Generator())) == len(plain)


def test_augmentation_defaults_follow_the_kind_of_image() -> None:
    raw = numbered_dataset((20, 20))
    assert split_dataset(raw, "digits")["augmentation"] == {"crop_padding": 0, "hflip": False}
    natural = split_dataset(raw, "cifar10")["augmentation"]
    assert natural == {"crop_padding": 4, "hflip": True}
    with pytest.raises(DataError, match="augmentation"):
        split_dataset(raw, "digits", augmentation={"rotate": 10})


def test_bundled_datasets_load_offline() -> None:
    mnist = load_dataset("mnist5k")
    assert mnist.images.shape == (5000, 1, 28, 28) and mnist.images.dtype == torch.uint8
    assert torch.bincount(mnist.labels).tolist() == [500] * 10
    digits = load_dataset("digits")
    assert digits.images.shape == (1797, 1, 8, 8) and int(digits.images.max()) == 255


def test_dataset_card_describes_the_splits(digits_splits: dict) -> None:
    card = dataset_card(digits_splits, seed=0)
    assert card["name"] == "digits" and card["num_classes"] == 10
    assert card["image_shape"] == [1, 8, 8]
    assert sum(card["counts"].values()) == 1797
    assert sum(card["counts_per_class"]["test"].values()) == card["counts"]["test"]


def test_image_folder_reads_resizes_and_splits(image_folder: Path) -> None:
    raw = load_dataset("image_folder", image_folder={"path": image_folder, "image_size": 16})
    assert raw.classes == ["cat", "dog", "owl"]
    assert raw.images.shape == (36, 3, 16, 16)
    gray = load_dataset(
        "image_folder", image_folder={"path": image_folder, "image_size": 8, "mode": "L"}
    )
    assert gray.images.shape == (36, 1, 8, 8)
    splits = split_dataset(raw, "image_folder", val_fraction=0.25, test_fraction=0.25)
    assert [len(splits[s]["labels"]) for s in ("val", "test")] == [7, 9]
    assert sum(len(splits[s]["labels"]) for s in ("train", "val", "test")) == 36


def test_image_folder_with_train_and_test_folders(tmp_path: Path) -> None:
    for part, count in (("train", 10), ("test", 3)):
        write_images(tmp_path / part / "a", count, (8, 8))
        write_images(tmp_path / part / "b", count, (9, 7), ".jpg")
    raw = load_dataset("image_folder", image_folder={"path": tmp_path, "image_size": 8})
    assert len(raw.labels) == 20 and len(raw.test_labels) == 6


# ---------------------------------------------------------------- errors


def test_unknown_dataset_name() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*cifar10"):
        load_dataset("imagenet")


@pytest.mark.parametrize(
    ("name", "layout"),
    [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw"), ("svhn", "train_32x32.mat")],
)
def test_missing_torchvision_dataset_says_where_to_put_it(
    tmp_path: Path, name: str, layout: str
) -> None:
    with pytest.raises(DataError) as error:
        load_dataset(name, raw_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / name) in message and layout in message and "download" in message


def test_missing_and_empty_image_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'} does not exist"):
        load_dataset("image_folder", image_folder={"path": tmp_path / "nope"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset("image_folder", image_folder={"path": tmp_path / "empty"})


def test_class_folder_without_images(image_folder: Path) -> None:
    (image_folder / "zebra").mkdir()
    (image_folder / "zebra" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="zebra has no images"):
        load_dataset("image_folder", image_folder={"path": image_folder})


def test_unreadable_image_is_named(image_folder: Path) -> None:
    broken = image_folder / "dog" / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=f"cannot read image {broken}"):
        load_dataset("image_folder", image_folder={"path": image_folder})


def test_split_that_empties_a_class_is_refused() -> None:
    with pytest.raises(DataError, match="stratified"):
        split_dataset(numbered_dataset((50, 1)), "synthetic")
    with pytest.raises(DataError, match="no images of class"):
        split_dataset(numbered_dataset((50, 3)), "synthetic", val_fraction=0.02, test_fraction=0.02)


def test_fractions_are_checked() -> None:
    with pytest.raises(DataError, match="val_fraction"):
        split_dataset(numbered_dataset((20, 20)), "synthetic", val_fraction=1.5)
