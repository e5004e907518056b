"""Benchmark of the training pipeline (issue: networks, datasets and training recipes).

1. Images/s of one training epoch of the quick-profile network (VGG11, width x0.25) fed by the
   in-memory pipeline (:class:`diffeosens.data.InMemoryLoader`: uint8 tensors on the device,
   batched crop + flip) vs the same network fed by a torchvision ``DataLoader`` with PIL
   transforms (``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
   ``Normalize``), with 0 and 2 worker processes. Same model, recipe and batch size.
2. Test accuracy against wall time for that network trained on the full CIFAR-10 training set
   with a recipe (default: the paper's ``cifar`` recipe compressed to ``--epochs`` epochs).

Usage: ``python bench/train.py [--epochs 20] [--recipe cifar] [--subset 10000] [--device cpu]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, markdown_table  # noqa: E402

from diffeosens.data import NORMALIZATION, load_dataset  # noqa: E402
from diffeosens.train import RECIPES, build_model, fit, make_loaders, param_groups  # noqa: E402

ARCH, WIDTH = "VGG11", 0.25


def epoch_images_per_s(loader, n_images: int, device: torch.device) -> float:
    torch.manual_seed(0)
    net = build_model(ARCH, seed=0, width_factor=WIDTH).to(device).train()
    opt = torch.optim.SGD(param_groups(net, 5e-4), lr=0.05, momentum=0.9)
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return n_images / (time.perf_counter() - t0)


def pipeline_comparison(subset: int, device: torch.device, rounds: int) -> list[dict[str, object]]:
    import torchvision.transforms as T

    mean, std = NORMALIZATION["cifar10"]
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    ds = torch.utils.data.Subset(load_dataset("cifar10", train=True, transform=tf), range(subset))
    rows = []
    fast = make_loaders("cifar10", n_train=subset, batch_size=128, augment=True, seed=0, device=device).train
    best = {}
    for _ in range(rounds):
        best["in-memory (uint8 on device, batched crop+flip)"] = max(best.get("in-memory (uint8 on device, batched crop+flip)", 0),
                                                                      epoch_images_per_s(fast, subset, device))
        for workers in (0, 2):
            dl = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=workers, persistent_workers=False)
            key = f"torchvision DataLoader + PIL transforms, num_workers={workers}"
            best[key] = max(best.get(key, 0), epoch_images_per_s(dl, subset, device))
    ref = best["in-memory (uint8 on device, batched crop+flip)"]
    for k, v in best.items():
        rows.append({"pipeline": k, "train images/s": f"{v:,.0f}", "in-memory speed-up": f"{ref / v:.2f}x"})
    return rows


def accuracy_vs_time(recipe: str, epochs: int, device: torch.device) -> list[dict[str, object]]:
    loaders = make_loaders("cifar10", batch_size=RECIPES[recipe].batch_size, augment=True, seed=0, device=device)
    net = build_model(ARCH, seed=0, width_factor=WIDTH)
    res = fit(net, loaders.train, loaders.test, recipe, epochs=epochs, seed=0, device=device, progress=False)
    h = res.history
    return [{"epoch": int(e), "wall time (min)": f"{t / 60:.1f}", "test accuracy": f"{a:.4f}"}
            for e, t, a in zip(h.epoch.values, h.time_s.values, h.test_acc.values)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--recipe", default="cifar")
    p.add_argument("--subset", type=int, default=10_000, help="training images for the pipeline comparison")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-accuracy", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    print(header(device))
    print("command: python bench/train.py " + " ".join(sys.argv[1:]))
    print(f"\n1. one training epoch of {ARCH} (width x{WIDTH}) on {args.subset:,} CIFAR-10 images, batch 128, best of {args.rounds}\n")
    print(markdown_table(pipeline_comparison(args.subset, device, args.rounds)))
    if not args.skip_accuracy:
        print(f"\n2. test accuracy vs wall time: {ARCH} (width x{WIDTH}), recipe {args.recipe!r}, {args.epochs} epochs, full training set\n")
        rows = accuracy_vs_time(args.recipe, args.epochs, device)
        print(markdown_table(rows))
        hit = next((r for r in rows if float(r["test accuracy"]) >= 0.80), None)
        print("\nfirst epoch at >= 80 %: " + (f"epoch {hit['epoch']}, {hit['wall time (min)']} min" if hit else "not reached"))


if __name__ == "__main__":
    main()
