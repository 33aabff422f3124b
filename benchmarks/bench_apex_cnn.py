"""Calibrate the synthetic benchmark: a small per-frame CNN on apex frames, subject-independent folds.

The presets should be learnable but not saturated: roughly 50-85% on `small` (chance is 1/7). On a
prepared real dataset (no apex PNGs) the apex frame is decoded from the clip, so the same CNN gives the
apex-frame side of the synthetic-vs-real calibration (docs/synthetic.md).

    python benchmarks/bench_apex_cnn.py --preset small --seed 0 --folds 3
    python benchmarks/bench_apex_cnn.py --data /path/to/synth_folder --folds 3
    python benchmarks/bench_apex_cnn.py --data data/real/ckplus-pairs --folds 3
    python benchmarks/bench_apex_cnn.py --data data/real/ckplus-pairs --folds 3 --input residual
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cvfer.codec import read_compressed, read_frames
from cvfer.data.manifest import Manifest, read_manifest
from cvfer.data.splits import read_splits
from cvfer.data.synthetic import generate_benchmark


def small_cnn(num_classes: int) -> nn.Module:
    """Four conv blocks, then a 4×4 spatial map flattened so the classifier knows where each feature is."""

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(
        block(3, 16),
        block(16, 32),
        block(32, 48),
        block(48, 64),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64 * 16, num_classes),
    )


def load_apex(manifest: Manifest, source: str = "apex") -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per clip (keyed by path) a float32 3×H×W image and the label. `source` "apex": the apex frame in
    [0, 1] (the synthetic benchmark's apex PNG, else decoded from the clip); "residual": the apex frame's
    residual accumulated back to the I frame (what MIC's f_E reads, Δ/255 in [-1, 1])."""
    images, labels = {}, {}
    for clip in manifest.clips:
        if source == "residual":
            video = read_compressed(manifest.root / clip.path, accumulate=True)
            image = video.residuals[max(clip.apex_index, 1) - 1].astype(np.float32) / 255
        elif "apex_path" in clip.extra:
            image = np.asarray(Image.open(manifest.root / clip.extra["apex_path"]).convert("RGB"), dtype=np.float32) / 255
        else:
            image = read_frames(manifest.root / clip.path, indices=[clip.apex_index])[0].astype(np.float32) / 255
        images[clip.path] = image.transpose(2, 0, 1)
        labels[clip.path] = manifest.label_index(clip)
    return images, labels


def train_fold(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, num_classes: int, epochs: int, seed: int
) -> float:
    """Train from scratch with random shifts and flips; return test accuracy."""
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    model = small_cnn(num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * -(-len(train_x) // 32))
    mean = train_x.mean(axis=(0, 2, 3), keepdims=True)
    std = train_x.std(axis=(0, 2, 3), keepdims=True)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    for _ in range(epochs):
        model.train()
        order = generator.permutation(len(train_x))
        for start in range(0, len(order), 32):
            batch = train_x[order[start : start + 32]].copy()
            dy, dx = generator.integers(-3, 4, 2)
            batch = np.roll(batch, (dy, dx), axis=(2, 3))
            if generator.random() < 0.5:
                batch = batch[..., ::-1]
            logits = model(torch.from_numpy(np.ascontiguousarray(batch)))
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(train_y[order[start : start + 32]]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        train_accuracy = (model(torch.from_numpy(train_x)).argmax(1).numpy() == train_y).mean()
        predictions = model(torch.from_numpy(test_x)).argmax(1).numpy()
    print(f"  train accuracy {train_accuracy:.3f}")
    return float((predictions == test_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an existing synthetic dataset folder (default: generate one)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=3, help="how many of the splits.json folds to evaluate")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--input", choices=("apex", "residual"), default="apex", help="the apex frame, or its residual accumulated to the I frame"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.data
        if root is None:
            root = Path(scratch) / args.preset
            generate_benchmark(root, args.preset, args.seed)
        manifest = read_manifest(root)
        splits = read_splits(root)
        images, labels = load_apex(manifest, args.input)
    accuracies = []
    started = time.perf_counter()
    for number, fold in enumerate(splits.folds[: args.folds]):
        train_x = np.stack([images[path] for path in fold.train])
        train_y = np.array([labels[path] for path in fold.train])
        test_x = np.stack([images[path] for path in fold.test])
        test_y = np.array([labels[path] for path in fold.test])
        accuracy = train_fold(train_x, train_y, test_x, test_y, len(manifest.classes), args.epochs, args.seed + number)
        accuracies.append(accuracy)
        print(f"fold {number}: {len(fold.train)} train / {len(fold.test)} test clips, {args.input} accuracy {accuracy:.3f}")
    print(
        f"{manifest.meta.get('preset', root)}: {args.input} CNN accuracy {np.mean(accuracies):.3f} ± {np.std(accuracies):.3f} "
        f"over {len(accuracies)} subject-independent folds (chance {1 / len(manifest.classes):.3f}), "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
