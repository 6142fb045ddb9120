"""Train the bundled ResNet8: its data sources, seeded draws, light augmentation and one-cycle schedule."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from quantcore.data import cifar, datasets
from quantcore.data.datasets import LabelledImages
from quantcore.models.resnet8 import build_resnet8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """The data a build draws on, and what the card should say about it."""

    name: str
    licence: str
    origin: str
    pixels: str  # how the stored images became 3x32x32 uint8
    load: Callable[[datasets.Split], LabelledImages]  # read on demand: --evaluate-only needs no train split
    folder: Path | None = None  # the Fashion-MNIST folder read whole, which a recipe can name


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    max_lr: float = 4e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.2
    shift_pixels: int = 2
    hflip: bool = True


# ---------------------------------------------------------------- data


FASHION_MNIST_PIXELS = "28x28 grey zero-padded by 2 px on every side to 32x32, repeated to 3 identical channels"


def load_source(args: argparse.Namespace) -> DataSource:
    """The train/test data named on the command line (Fashion-MNIST unless told otherwise)."""
    if args.cifar10:
        return DataSource(
            name="CIFAR-10",
            licence="no licence stated by its authors; see https://www.cs.toronto.edu/~kriz/cifar.html",
            origin=f"cifar-10-batches-py folder {args.cifar10}",
            pixels="32x32 RGB as stored",
            load=lambda split: cifar.load_cifar10(args.cifar10, split),
        )
    if args.from_samples:
        # For smoke builds where Debian's package is absent: split the shipped subset in two.
        subset = datasets.load_samples(args.from_samples)
        per_class = int(np.bincount(subset.labels).min()) // 2
        train_idx, test_idx = datasets.stratified_split(subset.labels, per_class, draw_rng(args.seed, "split"))
        halves = {"train": train_idx, "test": test_idx}
        return DataSource(
            name="Fashion-MNIST (samples subset)",
            licence="MIT",
            origin=f"{args.from_samples}, split in two stratified halves",
            pixels=FASHION_MNIST_PIXELS,
            load=lambda split: subset.take(halves[split]),
        )
    root = Path(args.fashion_mnist)
    return DataSource(
        name="Fashion-MNIST",
        licence="MIT",
        origin=f"Debian package dataset-fashion-mnist ({root})",
        pixels=FASHION_MNIST_PIXELS,
        load=lambda split: datasets.load_fashion_mnist(split, root),
        folder=root,
    )


_DRAWS = ("train", "test", "samples", "calibration", "split")


def draw_seed(seed: int, draw: str) -> list[int]:
    """The numpy seed of one draw: also what a recipe's calibration draw names."""
    return [seed, _DRAWS.index(draw)]


def draw_rng(seed: int, draw: str) -> np.random.Generator:
    # One stream per draw, so --evaluate-only can redo the test draw alone.
    return np.random.default_rng(draw_seed(seed, draw))


def limit_per_class(data: LabelledImages, per_class: int | None, seed: int, draw: str) -> LabelledImages:
    if per_class is None:
        return data
    picked, _ = datasets.stratified_split(data.labels, per_class, draw_rng(seed, draw))
    return data.take(picked)


def preprocessing_of(source: DataSource) -> dict[str, Any]:
    return {**datasets.PREPROCESSING, "pixels": source.pixels}


# ---------------------------------------------------------------- training


def _augment(images: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    # Random shifts with zero fill (a padded random crop) and left-right flips: clothes stay clothes.
    s = config.shift_pixels
    if s:
        padded = F.pad(images, (s, s, s, s))
        offsets = torch.randint(0, 2 * s + 1, (len(images), 2), generator=generator).tolist()
        images = torch.stack([padded[i, :, dy : dy + 32, dx : dx + 32] for i, (dy, dx) in enumerate(offsets)])
    if config.hflip:
        flip = torch.rand(len(images), generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images


def train(data: LabelledImages, config: TrainConfig) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """A ResNet8 trained on ``data`` with AdamW and a one-cycle schedule; returns it and per-epoch stats."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_resnet8()
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * steps_per_epoch
    warmup = config.warmup_fraction
    if math.isclose(warmup * total_steps, 1.0):  # OneCycleLR divides by (warm-up steps - 1): smoke runs only
        warmup = 1.5 / total_steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.max_lr, total_steps=total_steps, pct_start=warmup)
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        start, loss_sum, correct = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(data), generator=generator)
        for first in range(0, len(data), config.batch_size):
            idx = order[first : first + config.batch_size]
            x = _augment(images[idx], config, generator).float().div_(255.0)  # == datasets.preprocess
            logits = model(x)
            loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        stats = {
            "epoch": epoch,
            "train_loss": round(loss_sum / len(data), 4),
            "train_accuracy": round(correct / len(data), 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        history.append(stats)
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.4f  %.0f s",
            epoch,
            config.epochs,
            stats["train_loss"],
            stats["train_accuracy"],
            stats["seconds"],
        )
    return model.eval(), history


# ---------------------------------------------------------------- writing the variants
