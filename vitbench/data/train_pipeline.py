"""The fine-tuning input pipeline: per-rank training batches streamed by DataLoader workers, with keyed crops.

`TrainBatches(split, prep_train, seed=..., batch_size=...)` yields `(step, images, labels)` for step =
start_step + 1, start_step + 2, ... endlessly: uint8 NHWC images [batch_size // world, S, S, 3] and int64
labels. Which examples form a step is vit_jax's repeated shuffled stream (`vitbench.finetune.batch_stream`
with `torch.Generator().manual_seed(seed)`; each global batch sorted); rank r of `world` takes positions
[r B/W, (r+1) B/W) of it. The example at global position p of step t is augmented with
`vitbench.data.crops.example_rng(seed, t, p)`, so the batches are the same whatever the number of workers,
ranks or micro-batches, and resuming at step k gives exactly steps k+1... of an uninterrupted run.

Sources (`source=`): "cache" reads the decoded cache `prep_train.train_cache()` (exact for "resize_crop" and
"none": the resize before the random part is deterministic; refused for "inception", which is cut from the
original); "original" decodes `split.image(i)` per access in the workers; "memory" decodes the split once
into RAM (originals for "inception", else the resized squares); "auto" picks by `choose_source`
(BENCHMARKS.md "Fine-tuning input pipeline"). Exercised by `vitbench finetune` / `vitbench run --method
finetune` and `python benchmarks/loader.py`.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from vitbench.data import crops
from vitbench.data.resize import Preprocessing
from vitbench.errors import VitbenchError
from vitbench.finetune import SAMPLING, batch_stream

SOURCES = ("auto", "cache", "original", "memory")
AUTO_CACHE_BYTES = 2 << 30  # "auto" uses the decoded cache (resize_crop / none) when it is at most this big
AUTO_MEMORY_BYTES = 2 << 30  # ... and decodes the originals into RAM (inception) when they are at most this big
AUTO_MEMORY_IMAGES = 20_000  # ... and the split has at most this many images
_PROBE_IMAGES = 8  # images decoded to estimate the size of the originals


def rank_slice(batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Positions [lo, hi) of rank `rank`'s share of each global batch."""
    if world < 1 or not 0 <= rank < world:
        raise VitbenchError(f"rank {rank} is not in [0, world={world}); check the launcher's RANK / WORLD_SIZE")
    if batch_size % world:
        raise VitbenchError(f"batch size {batch_size} is not divisible by the {world} processes; pick a batch size that is a multiple of {world}")
    per = batch_size // world
    return rank * per, (rank + 1) * per


def index_batches(n: int, batch_size: int, seed: int, start_step: int = 0):
    """(step, sorted global batch of indices) for step = start_step + 1, ...: `batch_stream` replayed past
    `start_step` steps (indices only, nothing decoded)."""
    stream = batch_stream(n, batch_size, torch.Generator().manual_seed(int(seed)))
    for _ in range(start_step):
        next(stream)
    step = start_step
    while True:
        step += 1
        yield step, np.sort(next(stream))


def default_workers(device: str | None = None, source: str = "original") -> int:
    """Loader processes per rank when the caller does not say, from the cores this rank may use (the machine's
    cores / torchrun's LOCAL_WORLD_SIZE). CUDA: the GPU must never wait for the host, so cores - 1, at most 4
    for "cache" (one core crops about 2,000 images/s at 384 px) and at most 8 for "original" / "memory" (one core
    decodes and crops 250-550 images/s of VTAB-sized JPEGs at 384 px). CPU: the model's threads need every core, and a
    worker process competing with them stalls their parallel regions, so in-process unless the images are
    decoded per access ("original", one worker from 2 cores on): with cheap crops (digits 8 px -> 64 px, 3 % of
    a step) one worker trained ViT-Ti/16 at 0.8x, with 300 px photos in RAM it gained 10 % (BENCHMARKS.md
    "Fine-tuning input pipeline", "Fine-tuning runner"); `--loader-workers` overrides."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    cores = max(1, (os.cpu_count() or 1) // local)
    cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if cuda:
        return max(0, min(4 if source == "cache" else 8, cores - 1))
    return 1 if cores >= 2 and source == "original" else 0


def estimate_original_bytes(split, probe: int = _PROBE_IMAGES) -> int:
    """Decoded RGB bytes of the whole split, from the mean size of its first `probe` images."""
    n = len(split)
    k = min(n, probe)
    if k == 0:
        return 0
    sizes = [split.image(i).size for i in range(k)]
    return int(np.mean([w * h * 3 for w, h in sizes]) * n)


def choose_source(split, prep_train: Preprocessing) -> tuple[str, dict]:
    """("cache" | "memory" | "original", why) for `source="auto"`: "resize_crop" / "none" read the decoded cache
    when it is at most 2 GiB, else decode the originals in the workers; "inception" decodes a split of at most
    20,000 images whose originals take at most 2 GiB once into RAM, else in the workers (measurements in
    BENCHMARKS.md "Fine-tuning input pipeline")."""
    n = len(split)
    if prep_train.train_crop != "inception":
        t = prep_train.train_source_size()
        nbytes = n * t * t * 3
        return ("cache" if nbytes <= AUTO_CACHE_BYTES else "original"), {"cache_bytes": nbytes, "limit": AUTO_CACHE_BYTES}
    if n > AUTO_MEMORY_IMAGES:
        return "original", {"n": n, "limit_images": AUTO_MEMORY_IMAGES}
    nbytes = estimate_original_bytes(split)
    return ("memory" if nbytes <= AUTO_MEMORY_BYTES else "original"), {"estimated_bytes": nbytes, "limit": AUTO_MEMORY_BYTES}


class _Failure:
    """A VitbenchError raised in a worker, carried back as data so the caller re-raises the one-line error
    (DataLoader would wrap it in a multi-line traceback message)."""

    def __init__(self, exc: VitbenchError):
        self.kind, self.message = type(exc), str(exc)


class _StepBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item for key (step, lo, indices) is the per-rank batch of that step."""

    def __init__(self, split, prep_train: Preprocessing, seed: int, source: str, images=None):
        self.split, self.prep, self.seed, self.source, self.images = split, prep_train, int(seed), source, images
        self.labels = np.asarray(split.labels, dtype=np.int64)

    def _one(self, i: int, rng: np.random.Generator) -> np.ndarray:
        if self.source == "original":
            return crops.augment_original(self.split.image(i), self.prep, rng)
        if self.prep.train_crop == "inception":  # memory: the decoded originals
            return crops.augment_original(self.images[i], self.prep, rng)
        return crops.augment_source(self.images[i], self.prep, rng)  # cache / memory: the resized squares

    def __getitem__(self, key):
        step, lo, indices = key
        s = self.prep.size
        in_worker = torch.utils.data.get_worker_info() is not None
        images = torch.empty((len(indices), s, s, 3), dtype=torch.uint8)
        if in_worker:  # filled in place in shared memory: handing the batch over copies nothing
            images.share_memory_()
        out = images.numpy()
        try:
            for j, i in enumerate(indices):
                out[j] = self._one(int(i), crops.example_rng(self.seed, step, lo + j))
        except Exception as exc:  # noqa: BLE001 - carried back as one line; DataLoader would wrap a traceback
            if not in_worker:
                raise
            if not isinstance(exc, VitbenchError):
                exc = VitbenchError(f"training image {self.split.describe(int(indices[j]))} (split index {int(indices[j])}): "
                                    f"{type(exc).__name__}: {exc}")
            return _Failure(exc)
        return step, images, torch.from_numpy(self.labels[np.asarray(indices, dtype=np.int64)])


class _StepSampler(torch.utils.data.Sampler):
    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, lo: int, hi: int):
        self.args, self.lo, self.hi = (n, batch_size, seed, start_step), lo, hi

    def __iter__(self):
        for step, batch in index_batches(*self.args):
            yield step, self.lo, batch[self.lo : self.hi].tolist()


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # each worker is one core's worth of decoding; no intra-op thread pools


def _mp_context():
    """The fork start method: ImageSplit holds closures over its reader, which reach forked workers without
    pickling (spawn / forkserver would have to pickle them, and cannot). None where fork does not exist."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    return multiprocessing.get_context("fork")


class TrainBatches:
    """Endless per-rank training batches; see the module docstring. Also a context manager (`close()` on exit)."""

    def __init__(self, split, prep_train: Preprocessing, *, seed: int, batch_size: int, start_step: int = 0,
                 rank: int = 0, world: int = 1, workers: int | None = None, source: str = "auto",
                 cache_dir=None, progress=None, pin_memory: bool = False, device: str | None = None,
                 prefetch_factor: int = 2):
        """`split`: an ImageSplit; `prep_train`: the training Preprocessing (`train_crop`, `hflip`, `train_resize`,
        resize fields); `seed`: the cell seed (index stream and crops); `start_step`: steps already trained
        (the first batch is step start_step + 1); `rank` / `world`: this process's share of each global batch;
        `workers`: DataLoader processes (None: `default_workers`); `source`: one of SOURCES; `cache_dir`: the
        decoded-image cache folder as `cached_resized_images` takes it (None: `$VITBENCH_CACHE_DIR/images`);
        `progress(desc, done, total)`: called while the cache or the RAM copy is built; `pin_memory`: pinned
        batches for asynchronous host-to-GPU copies; `device`: the training device, for the default worker
        count; `prefetch_factor`: batches each worker prepares ahead."""
        if source not in SOURCES:
            raise VitbenchError(f"unknown training image source {source!r}; use one of {list(SOURCES)}")
        if batch_size < 1:
            raise VitbenchError(f"batch size must be >= 1, got {batch_size}")
        if start_step < 0:
            raise VitbenchError(f"start_step must be >= 0, got {start_step}")
        if len(split) < 1:
            raise VitbenchError("the training split is empty; nothing to fine-tune on")
        self.lo, self.hi = rank_slice(batch_size, rank, world)
        self.split, self.prep, self.seed, self.batch_size, self.start_step = split, prep_train, int(seed), int(batch_size), int(start_step)
        why: dict = {}
        chosen = source
        if source == "auto":
            chosen, why = choose_source(split, prep_train)
        if chosen == "cache" and prep_train.train_crop == "inception":
            raise VitbenchError("the inception crop is cut from the original image, which the decoded cache (squashed "
                                "to a square) no longer has; use source 'original', 'memory' or 'auto'")
        images, cache_key = None, None
        if chosen == "cache":
            from vitbench.data.image_cache import cache_file, cached_resized_images

            images = cached_resized_images(split, prep_train.train_cache(), cache_dir=cache_dir, progress=progress)
            cache_key = cache_file(split, prep_train.train_cache(), cache_dir).stem
        elif chosen == "memory":
            images = _decode_all(split, prep_train, progress)
        self.workers = default_workers(device, chosen) if workers is None else int(workers)
        if self.workers < 0:
            raise VitbenchError(f"loader workers must be >= 0, got {workers}")
        workers_note = None
        if self.workers and _mp_context() is None:  # e.g. Windows: no fork, and the split cannot be pickled
            self.workers, workers_note = 0, "no fork start method on this platform: images are loaded in-process"
        self.pin_memory, self.prefetch_factor = bool(pin_memory), int(prefetch_factor)
        self._dataset = _StepBatches(split, prep_train, self.seed, chosen, images)
        self._iters: list = []
        self.info = {
            "source": chosen, "source_requested": source, "source_reason": why, "workers": self.workers,
            "rng": crops.RNG_RULE, "crop": crops.describe(prep_train), "index_stream": SAMPLING + "; each global batch sorted",
            "cache_key": cache_key, "rank": rank, "world": world, "per_rank_batch": self.hi - self.lo,
            "start_step": self.start_step,
        }
        if workers_note:
            self.info["workers_note"] = workers_note

    def __iter__(self):
        """(step, images uint8 [B/W, S, S, 3], labels int64 [B/W]) from step start_step + 1 on; each call to
        iter() starts the stream there again."""
        sampler = _StepSampler(len(self.split), self.batch_size, self.seed, self.start_step, self.lo, self.hi)
        kwargs = {}
        if self.workers:
            kwargs = dict(worker_init_fn=_worker_init, prefetch_factor=self.prefetch_factor, persistent_workers=False,
                          multiprocessing_context=_mp_context())
        loader = torch.utils.data.DataLoader(self._dataset, batch_size=None, sampler=sampler, num_workers=self.workers,
                                             pin_memory=self.pin_memory, **kwargs)
        it = iter(loader)
        self._iters.append(it)
        try:
            while True:
                try:
                    item = next(it)
                except RuntimeError as exc:
                    if not any(t in str(exc) for t in ("exited unexpectedly", "killed by signal")):
                        raise  # an error inside a worker is a _Failure (one line) or propagates as itself
                    first = str(exc).strip().splitlines()[0]  # e.g. killed by the kernel's out-of-memory killer
                    raise VitbenchError(f"a training-image loader process died ({first}); pass fewer "
                                        "loader workers (--loader-workers) or free memory, then run again") from None
                if isinstance(item, _Failure):
                    raise item.kind(item.message)
                step, images, labels = item  # DataLoader hands tuples over as lists
                yield step, images, labels
        finally:
            self._shutdown(it)

    def _shutdown(self, it) -> None:
        if it in self._iters:
            self._iters.remove(it)
        stop = getattr(it, "_shutdown_workers", None)
        if stop is not None:
            stop()

    def close(self) -> None:
        """Stop the loader workers (the batches already delivered stay valid)."""
        for it in list(self._iters):
            self._shutdown(it)

    def __enter__(self) -> "TrainBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _decode_all(split, prep_train: Preprocessing, progress=None) -> list[np.ndarray]:
    """Every image of the split in RAM: originals for "inception", else the resized squares the crop starts from."""
    keep_original = prep_train.train_crop == "inception"

    def one(i: int) -> np.ndarray:
        img = split.image(i)
        return np.asarray(img, dtype=np.uint8) if keep_original else crops.train_source(img, prep_train)

    n = len(split)
    out: list[np.ndarray] = []
    desc = f"decoding {split.provenance.get('task', '')}/{split.provenance.get('split', '')} into memory"
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for arr in pool.map(one, range(n)):
            out.append(arr)
            if progress is not None and (len(out) % 256 == 0 or len(out) == n):
                progress(desc, len(out), n)
    return out


__all__ = ["TrainBatches", "choose_source", "default_workers", "index_batches", "rank_slice", "SOURCES"]
