"""The datasets basin knows by name: their splits, shapes, classes and source files."""

from __future__ import annotations

from dataclasses import dataclass, field

from basin.data.errors import DatasetError

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)

_IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_TRAIN = tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = ("cifar-10-batches-bin/test_batch.bin",)
_OMNIGLOT = tuple(f"omniglot/{z}.zip" for z in
                  ("images_background_small1", "images_background_small2", "all_runs"))
_TINY_IMAGENET = ("tiny-imagenet-200.zip",)
# ODIN's resized sets as the mirror repacks them (odin/*.tar.gz, verified by the sha256 of the
# uncompressed tar); the official Dropbox archives pack the same JPEGs into different tars
_ODIN_TINY = ("odin/Imagenet_resize.tar",)
_ODIN_LSUN = ("odin/LSUN_resize.tar",)

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


@dataclass(frozen=True)
class DatasetInfo:
    """What a named dataset is, without loading it.

    ``files`` are paths relative to the mirror root (no added ``.gz``); ``split_files`` says which
    of them each split reads (train and val both read the official training files); ``sizes``
    is the number of images per split. ``kind`` selects the loader (``idx``, ``cifar``,
    ``cifar-bw``, ``omniglot``, ``tiny-imagenet``, ``image-tarball``, ``uniform-noise``,
    ``gaussian-noise``). ``optional`` sets are not in the offline mirror: ``basin data verify``
    reports them absent instead of failing, and callers check :func:`~basin.data.is_available`
    before using them.
    """

    name: str
    splits: tuple[str, ...]
    shape: tuple[int, int, int]
    n_classes: int
    description: str
    files: tuple[str, ...]
    kind: str
    sizes: dict[str, int] = field(default_factory=dict)
    split_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    n_val: int = 0  # images carved from the official training file for "val"
    optional: bool = False

    @property
    def synthetic(self) -> bool:
        return not self.files


def _idx(name: str, folder: str, classes: tuple[str, ...], description: str) -> DatasetInfo:
    train = tuple(f"{folder}/{f}" for f in _IDX_TRAIN)
    test = tuple(f"{folder}/{f}" for f in _IDX_TEST)
    return DatasetInfo(
        name, ("train", "val", "test"), MNIST_SHAPE, len(classes), description, train + test,
        "idx", {"train": 50_000, "val": 10_000, "test": 10_000},
        {"train": train, "val": train, "test": test}, classes, n_val=10_000)


def _cifar(name: str, kind: str, shape: tuple[int, int, int], description: str) -> DatasetInfo:
    return DatasetInfo(
        name, ("train", "val", "test"), shape, 10, description, _CIFAR_TRAIN + _CIFAR_TEST,
        kind, {"train": 45_000, "val": 5_000, "test": 10_000},
        {"train": _CIFAR_TRAIN, "val": _CIFAR_TRAIN, "test": _CIFAR_TEST}, CIFAR10_CLASSES,
        n_val=5_000)


def _noise(name: str, description: str) -> DatasetInfo:
    return DatasetInfo(name, ("val", "test"), MNIST_SHAPE, 1, description, (), name,
                       {"val": 10_000, "test": 10_000}, {"val": (), "test": ()}, ("noise",))


_REGISTRY: dict[str, DatasetInfo] = {info.name: info for info in (
    _idx("mnist", "mnist", tuple(str(d) for d in range(10)),
         "MNIST handwritten digits, 28x28 grayscale"),
    _idx("fashion-mnist", "fashion-mnist", FASHION_CLASSES,
         "Fashion-MNIST clothing images, 28x28 grayscale"),
    _cifar("cifar10", "cifar", CIFAR_SHAPE, "CIFAR-10 natural images, 32x32 RGB"),
    _cifar("cifar10-bw", "cifar-bw", MNIST_SHAPE,
           "CIFAR-10 resized to 28x28 (antialiased bilinear), first (R) channel only: the "
           "attractor paper's OOD set"),
    DatasetInfo("notmnist", ("test",), MNIST_SHAPE, 10,
                "notMNIST letters A-J (small set), 28x28 grayscale; test split only",
                tuple(f"notmnist/{f}" for f in _IDX_TEST), "idx", {"test": 10_000},
                {"test": tuple(f"notmnist/{f}" for f in _IDX_TEST)}, tuple("ABCDEFGHIJ")),
    DatasetInfo("omniglot", ("test",), MNIST_SHAPE, 692,
                "Omniglot drawings (mirror subset: background small1+small2 and the one-shot "
                "runs), 105x105 resized to 28x28 (antialiased bilinear), white ink on black; "
                "test split only", _OMNIGLOT, "omniglot", {"test": 6_640},
                {"test": _OMNIGLOT}),
    DatasetInfo("tiny-imagenet", ("test",), CIFAR_SHAPE, 200,
                "Tiny-ImageNet-200 validation images (the official zip's val/ folder, labelled "
                "by wnid), 64x64 resized to 32x32 (Pillow bilinear); test split only; optional, "
                "not in the mirror", _TINY_IMAGENET, "tiny-imagenet", {"test": 10_000},
                {"test": _TINY_IMAGENET}, optional=True),
    DatasetInfo("tiny-imagenet-resize", ("test",), CIFAR_SHAPE, 1,
                "ODIN's Tiny-ImageNet (resize): the 10,000 Tiny-ImageNet test images at 32x32 "
                "(odin/Imagenet_resize.tar.gz; 189 grayscale JPEGs replicated to RGB), "
                "unlabelled, in member-name order; test split only; optional", _ODIN_TINY,
                "image-tarball", {"test": 10_000}, {"test": _ODIN_TINY}, ("unlabelled",),
                optional=True),
    DatasetInfo("lsun-resize", ("test",), CIFAR_SHAPE, 1,
                "ODIN's LSUN (resize): 10,000 LSUN test images at 32x32 RGB "
                "(odin/LSUN_resize.tar.gz), unlabelled, in member-name order; test split "
                "only; optional", _ODIN_LSUN, "image-tarball", {"test": 10_000},
                {"test": _ODIN_LSUN}, ("unlabelled",), optional=True),
    _noise("uniform-noise", "i.i.d. uniform noise in [0, 1], seeded; 1x28x28 by default"),
    _noise("gaussian-noise",
           "i.i.d. Gaussian noise, mean 0.5, std 0.25, clipped to [0, 1], seeded; 1x28x28 by "
           "default"),
)}


def dataset_names() -> list[str]:
    """Every dataset name ``load_dataset`` accepts, in a stable order."""
    return list(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; unknown names raise :class:`DatasetError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: "
                           f"{', '.join(_REGISTRY)}") from None
