"""Does VGG11 without BatchNorm survive its first epoch under the quick profile? (issue: claims on a laptop CPU)

VGG11 (no BN, width 0.25) at PyTorch's default initialisation starts with an output of about
1e-4: the signal shrinks by a constant factor per layer. SGD (lr 0.1, momentum 0.9) first sits
on this plateau (loss ln 10), then leaves it in a burst; in some seeds the burst kills the network
for good (every ReLU dead or the output constant: the loss returns to ln 10 and stays there).
The paper's 250 epochs leave time for that; the quick profile's 6 do not.

For each seed and each variant of the first steps of the quick ``cifar`` recipe this script runs
the real training steps (the quick profile's data, augmentation, batch 128, weight decay, the
cosine lr of a 6-epoch run) for ``--steps`` steps and records

* the step at which the batch loss first falls below 2.2 (the escape from the plateau),
* the mean loss over the last 50 steps and the output spread (per-logit standard deviation over
  the batch, averaged) at the end: a collapsed net is back at ln 10 = 2.303 with spread ~1e-5,
* the largest gradient norm and the fraction of steps whose gradient norm exceeds 1.

Variants: ``paper`` (the recipe as is), ``warmup`` (linear lr warm-up over the first epoch,
``Recipe.warmup_epochs = 1``, what the quick profile uses), ``clip`` (gradient norm clipped to 1,
``Recipe.clip_grad_norm = 1``).

    python bench/vgg_collapse.py                 # seeds 0-2, all variants, 600 steps (~8 min on 2 cores)
    python bench/vgg_collapse.py --full          # also the whole 6-epoch quick run of each (~3 min each)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, markdown_table  # noqa: E402

from diffeosens import profiles  # noqa: E402
from diffeosens.train import RECIPES, build_model, lr_at, make_loaders, param_groups, train_network, warmup_factor  # noqa: E402

VARIANTS = {"paper": {}, "warmup": {"warmup_epochs": 1.0}, "clip": {"clip_grad_norm": 1.0}}
EPOCHS = 6  # the quick profile's; sets the cosine schedule of the steps run here


def first_steps(seed: int, variant: str, steps: int) -> dict[str, object]:
    rec = RECIPES["cifar"].with_(**VARIANTS[variant])
    size = profiles.training("cifar", "quick", "VGG11")
    model = build_model("VGG11", seed=seed, dataset="cifar10", recipe=rec, width_factor=size.width_factor)
    torch.manual_seed(seed)
    loaders = make_loaders("cifar10", n_train=size.n_train, n_test=256, batch_size=rec.batch_size, augment=rec.augment, seed=seed)
    opt = torch.optim.SGD(param_groups(model, rec.weight_decay), lr=rec.lr, momentum=rec.momentum)
    n_batches = len(loaders.train)
    model.train()
    losses: list[float] = []
    escape, max_norm, over_one, spread = None, 0.0, 0, math.nan
    t0 = time.perf_counter()
    step = 0
    while step < steps:
        for x, y in loaders.train:
            if step >= steps:
                break
            epoch, b = divmod(step, n_batches)
            lr = lr_at(rec, epoch, EPOCHS) * warmup_factor(rec, epoch + (b + 1) / n_batches)
            for g in opt.param_groups:
                g["lr"] = lr
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), rec.clip_grad_norm if rec.clip_grad_norm > 0 else math.inf))
            opt.step()
            max_norm, over_one = max(max_norm, norm), over_one + (norm > 1.0)
            losses.append(loss.item())
            if escape is None and losses[-1] < 2.2:
                escape = step
            spread = float(out.detach().std(0).mean())
            step += 1
    tail = losses[-50:]
    return {
        "seed": seed, "variant": variant, "steps": steps, "escape step": "-" if escape is None else escape,
        "final loss (last 50)": f"{sum(tail) / len(tail):.3f}", "output spread": f"{spread:.2g}",
        "collapsed": "yes" if spread < 1e-3 else "no", "max grad norm": f"{max_norm:.2g}",
        "steps with norm > 1": f"{over_one / steps:.1%}", "s": f"{time.perf_counter() - t0:.0f}",
    }


def full_run(seed: int, variant: str) -> dict[str, object]:
    saved = dict(profiles.RECIPE_DEPARTURES)
    profiles.RECIPE_DEPARTURES.clear()  # the variant alone, not the profile's departure on top
    try:
        res = train_network("VGG11", seed=seed, profile="quick", progress=False, recipe_overrides=VARIANTS[variant] or None)
    finally:
        profiles.RECIPE_DEPARTURES.update(saved)
    h = res.history
    return {
        "seed": seed, "variant": variant, "epochs": int(h.epoch[-1]), "train acc": f"{float(h.train_acc[-1]):.3f}",
        "best test acc": f"{res.best_test_acc:.3f}", "steps clipped (last epoch)": f"{float(h.clipped_frac[-1]):.0%}",
        "s": f"{float(h.time_s[-1]):.0f}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--full", action="store_true", help="also train each for the quick profile's 6 epochs")
    args = p.parse_args()
    torch.set_num_threads(2)
    print(header(torch.device("cpu")))
    print("command: python bench/vgg_collapse.py " + " ".join(sys.argv[1:]))
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            rows.append(first_steps(seed, variant, args.steps))
            print(rows[-1], flush=True)
    print()
    print(markdown_table(rows))
    if args.full:
        full = []
        for seed in args.seeds:
            for variant in args.variants:
                full.append(full_run(seed, variant))
                print(full[-1], flush=True)
        print()
        print(markdown_table(full))


if __name__ == "__main__":
    main()
