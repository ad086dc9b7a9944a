"""Benchmark: the fine-tuning runner against a plain PyTorch loop, the input pipeline against the model, GPU MFU.

Run by hand from the repo root:  PYTHONPATH=. python benchmarks/finetune.py [--reps 3] [--steps 8] [--device cuda]
(a) Runner vs bare loop, CPU default: random-init ViT-Ti/16 at 64 px, batch 128, SGD momentum 0.9, clipping at 1,
    on the embedded digits task with the paper's inception crop + flip. "runner" is the whole training loop of
    `vitbench/runners/finetune.py` (input pipeline from the original images, keyed augmentation, schedule, the
    device-side loss history, the per-step log); "bare" is a minimal loop doing the same work: the same model
    from `vitbench.models.create`, each batch cropped from the decoded originals inside the loop with the same
    crop function, normalise, forward, cross-entropy, backward, clip, step, `loss.item()`; "bare on premade
    batches" makes its batches before the timer (the model's work alone). They alternate `--reps` times; ratios
    are of median images/s. Last lines: `ratio_vs_bare_premade_batches=<x>` and `ratio_vs_bare=<y>` (target >= 0.95).
(b) Loader vs model: the pipeline alone (the model replaced by a no-op) on the same data and on a VTAB-like
    split of 1,000 photos (300x400 JPEGs written to a temp folder), inception crop to the training size,
    against what the model consumes in (a). `loader_vs_model=<y>` (target >= 2).
(c) With `--device cuda`: ViT-B/16 at 224 and 384 px, bf16 autocast, batch 512 (micro-batch probed), random
    init: training images/s and model FLOPs utilisation against the card's dense bf16 peak (`--peak-tflops`,
    default from the device name), FLOPs counted by `torch.utils.flop_counter` (forward x 3 for training).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vitbench.cells import Cell, RunContext  # noqa: E402
from vitbench.methods import get_method  # noqa: E402
from vitbench.methods.finetune import FinetuneParams  # noqa: E402
from vitbench.spec import SourceSpec, TaskSpec  # noqa: E402

DIGITS = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),),
                  splits={"train": "all[:1200]", "test": "all[1200:1328]"})
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.2}


def params(steps: int, batch: int, crop: str = "inception") -> dict:
    """The cell parameters `vitbench finetune` would plan for this recipe."""
    fp = FinetuneParams(steps=steps, lr=0.01, batch_size=batch, warmup_steps=1, train_crop=crop, hflip=True)
    return get_method("finetune").expand(fp)[0]


def runner_rate(task, model, size, steps, batch, cache, device="cpu", precision="auto") -> float:
    """Images/s of the runner's training loop (its own timer: model build, data load and eval excluded)."""
    cell = Cell(suite="bench", task=task, model=model, weights="none", method="finetune", params=params(steps, batch), seed=0,
                img_size=size, weights_id="none")
    ctx = RunContext(cache_dir=cache, device=device, eval_batch_size=256, precision=precision)
    result = get_method("finetune").run_cell(cell, ctx, [])
    return steps * batch / result.details["execution"]["train_seconds_this_run"]


def bare_rate(task, model_name, size, steps, batch, cache, device="cpu", premade: bool = False) -> float:
    """A plain PyTorch loop doing the same work: the same shuffled index stream, each example cropped from its
    decoded original with the same crop function inside the loop (as a plain loop with a transform would),
    normalise, forward, cross-entropy, backward, clip, step, `loss.item()`. `premade=True`: the batches are
    made beforehand, outside the timer (the loop then does only the model's work)."""
    from vitbench.data import crops, load_split
    from vitbench.data.train_pipeline import TrainBatches, index_batches
    from vitbench.data.transforms import normalize, preprocessing_for
    from vitbench.models import create

    torch.manual_seed(0)
    model = create(model_name, weights="none", img_size=size, num_classes=task.num_classes).to(device)
    prep = preprocessing_for(model.data_config, size=size, resize="squash")
    split = load_split(task, "train")
    if premade:
        with TrainBatches(split, prep, seed=0, batch_size=batch, workers=0, cache_dir=cache) as stream:
            batches = [b for _, b in zip(range(steps), stream)]
    else:
        originals = [np.asarray(split.image(i)) for i in range(len(split))]  # decoded once, as the runner does
        labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64))
        batches = ((step, idx) for step, idx in index_batches(len(split), batch, 0))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    t0 = time.perf_counter()
    for _, item in zip(range(steps), batches):
        if premade:
            _, images, y = item
        else:
            step, idx = item
            images = torch.from_numpy(np.stack([crops.augment_original(originals[i], prep, crops.example_rng(0, step, p))
                                                for p, i in enumerate(idx)]))
            y = labels[idx]
        x = normalize(images.to(device), prep)
        loss = F.cross_entropy(model(x), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
    return steps * batch / (time.perf_counter() - t0)


def loader_rate(split, size, batch, steps, cache, workers) -> float:
    from vitbench.data.train_pipeline import TrainBatches
    from vitbench.data.transforms import Preprocessing

    prep = Preprocessing(size=size, train_crop="inception", hflip=True)
    with TrainBatches(split, prep, seed=0, batch_size=batch, workers=workers, cache_dir=cache) as stream:
        it = iter(stream)
        next(it)  # worker start-up and first decode outside the timer
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)
    return steps * batch / (time.perf_counter() - t0)


def photo_split(folder: Path, n: int = 1000):
    """A VTAB-like training split: n JPEG photos-sized images (300x400) in an imagefolder of 10 classes."""
    from PIL import Image

    from vitbench.data import load_split

    rng = np.random.default_rng(0)
    for i in range(n):
        d = folder / "train" / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        arr = (rng.random((300, 400, 3)) * 40 + np.linspace(0, 200, 400)[None, :, None]).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i:05d}.jpg", quality=90)
    task = TaskSpec(name="photos", num_classes=10, sources=(SourceSpec("imagefolder", str(folder)),),
                    splits={"train": "train"})
    return load_split(task, "train")


def gpu_section(args, cache) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from vitbench.models import create

    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    for size in (224, 384):
        model = create("vit_b16", weights="none", img_size=size, num_classes=100).cuda()
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, size, size, device="cuda"))
        train_flops = 3 * counter.get_total_flops()  # forward + backward (2x forward)
        del model
        task = TaskSpec(name="rand", num_classes=100, sources=(SourceSpec("digits"),), splits={"train": "all[:1200]", "test": "all[1200:1712]"})
        rate = runner_rate(task, "vit_b16", size, args.gpu_steps, 512, cache, device="cuda")
        tflops = rate * train_flops / 1e12
        mfu = f"{100 * tflops / peak:.1f}%" if peak else "unknown peak (pass --peak-tflops)"
        print(f"gpu {name} vit_b16 {size}px bf16 batch 512: {rate:.0f} images/s, {tflops:.0f} TFLOP/s, MFU {mfu}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpu-steps", type=int, default=30)
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="vitbench-bench-ft-"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    if args.device.startswith("cuda"):
        gpu_section(args, cache)
    runner, bare, premade = [], [], []
    for rep in range(args.reps):  # alternate, so a noisy neighbour hits all alike
        runner.append(runner_rate(DIGITS, "vit_ti16", args.size, args.steps, args.batch, cache))
        bare.append(bare_rate(DIGITS, "vit_ti16", args.size, args.steps, args.batch, cache))
        premade.append(bare_rate(DIGITS, "vit_ti16", args.size, args.steps, args.batch, cache, premade=True))
        print(f"rep {rep}: runner {runner[-1]:.1f} images/s, bare {bare[-1]:.1f} images/s, "
              f"bare on premade batches {premade[-1]:.1f} images/s")
    model_rate = statistics.median(runner)
    from vitbench.data import load_split

    digits = load_split(DIGITS, "train")
    photos = photo_split(cache / "photos")
    loaders = {}
    for label, split in (("digits", digits), ("photos 300x400 jpeg", photos)):
        for workers in (0, 1, 2):
            loaders[(label, workers)] = loader_rate(split, args.size, args.batch, max(4, args.steps), cache, workers)
            print(f"loader {label} workers={workers}: {loaders[(label, workers)]:.0f} images/s")
    print(f"model consumes {model_rate:.1f} images/s (ViT-Ti/16 {args.size}px, batch {args.batch}, cpu)")
    print(f"loader_vs_model={min(max(v for (lab, _), v in loaders.items() if lab == label) for label in ('digits', 'photos 300x400 jpeg')) / model_rate:.1f}")
    print(f"ratio_vs_bare_premade_batches={statistics.median(runner) / statistics.median(premade):.3f}")
    print(f"ratio_vs_bare={statistics.median(runner) / statistics.median(bare):.3f}")


if __name__ == "__main__":
    main()
