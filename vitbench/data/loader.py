"""`load_split(task, split)`: find a task's data (prepared copy first, then its sources in order), slice it.

Owns source fallback, per-source split remaps and declared substitutes, label transforms, class checks,
corrupt-image skipping, fingerprints and provenance. Exercised by every `vitbench run`,
`vitbench data prepare` and `vitbench data info`.

Per-source options understood here (any source kind):
- `split_map`: {name in the task's expressions -> this source's split name}, e.g. {validation = "val"}.
- `splits`: {task split -> expression over this source} for equivalent slices (recorded as a remap).
- `substitutes`: {task split -> expression} for stand-ins that differ from the paper's split (recorded as a
  substitution with `substitute_note`), e.g. clip-benchmark mirrors have no VTAB val (docs/sources.md#hugging-face-mirrors).
- `unavailable`: [task splits this source cannot give]; the next source is tried.
- `label_transform`: overrides the task's transform ("" = labels already mapped).
- `lossy`: true when the images are lossy re-encodings (JPEG copies).
- `order`: "native" or "hashed", the row order slices are taken in (vitbench/data/order.py, docs/slices.md);
  default "hashed" for imagefolder and torchvision sources, "native" for every other kind.
"""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vitbench import env
from vitbench.data.base import ImageSplit, stable_hash
from vitbench.data.prepared import load_prepared_split, read_manifest
from vitbench.data.real import real_label_sets_for_split
from vitbench.data.labels import apply_label_transform
from vitbench.data.order import HASH_RULE, hashed_permutation, order_for, order_provenance
from vitbench.data.sources import SourceReader, SourceUnavailable, open_source
from vitbench.data.splits import SplitExpr, SliceTerm, parse_split, resolve_split
from vitbench.errors import DataMissing, VitbenchError, unknown_name
from vitbench.spec import SourceSpec, TaskSpec

FORMAT_VERSION = 1


# Sizes of the VTAB-1k subsets (task_adaptation: plain prefixes, docs/vtab.md#splits).
VTAB1K_SIZES = {"train800": 800, "val200": 200, "train800val200": 1000}

def expected_size(task: TaskSpec, split: str) -> int | None:
    """The split's defined size: the task's `options.expected_sizes[split]`, else VTAB-1k's 800/200/1000."""
    sizes = task.options.get("expected_sizes") or {}
    value = sizes.get(split, VTAB1K_SIZES.get(split))
    return int(value) if value is not None else None


def default_cache_dir() -> Path:
    return env.cache_dir()


def default_data_root() -> Path:
    return env.data_root()


def split_expression_for(task: TaskSpec, split: str, spec: SourceSpec) -> tuple[SplitExpr, dict[str, Any] | None]:
    """The expression to read `split` from source `spec`, and a substitution record if it is a stand-in."""
    paper = task.splits[split]
    opts = spec.options
    note = None
    if split in opts.get("substitutes", {}):
        text = opts["substitutes"][split]
        note = {
            "split": split, "paper_expression": paper, "used_expression": text,
            "note": opts.get("substitute_note", "declared substitute: this source lacks the paper's split"),
        }
    elif split in opts.get("splits", {}):
        text = opts["splits"][split]
    else:
        text = paper
    expr = parse_split(text)
    split_map = opts.get("split_map", {})
    if split_map:
        expr = SplitExpr(tuple(SliceTerm(split_map.get(t.split, t.split), t.start, t.stop) for t in expr.terms))
    return expr, note


def split_from_reader(task: TaskSpec, split: str, reader: SourceReader, spec: SourceSpec) -> ImageSplit:
    """Slice `reader` with the task's (or the source's) expression for `split` into an ImageSplit."""
    native = getattr(reader, "native_splits", None)
    if native is not None and split not in spec.options.get("splits", {}) and split not in spec.options.get("substitutes", {}):
        if split not in native:
            raise SourceUnavailable(f"has only splits {sorted(native)}")
        expr, substitution = parse_split(split), None
    else:
        expr, substitution = split_expression_for(task, split, spec)
    sizes = reader.split_sizes()
    ranges = resolve_split(expr, sizes, where=f"task {task.name!r} split {split!r} ({spec.kind}:{spec.id})")
    order = order_for(spec.kind, spec.options)
    perms = {s: _hashed_order(reader, s) for s in dict.fromkeys(r.split for r in ranges)} if order == "hashed" else {}
    # (source split, source row) of every selected example: position i of the ordered split is row perm[i]
    pairs = [(r.split, int(perms[r.split][i]) if perms else i) for r in ranges for i in range(r.start, r.stop)]
    if not pairs:
        raise VitbenchError(f"task {task.name!r} split {split!r}: expression {str(expr)!r} selects no images from {spec.kind}:{spec.id} (sizes {sizes}); fix the task's splits")
    raw: list[Any] = []
    for r in ranges:
        rows = range(r.start, r.stop) if not perms else perms[r.split][r.start:r.stop].tolist()
        raw.extend(reader.raw_labels(r.split, rows))
    if any(v is None for v in raw):
        raise VitbenchError(f"task {task.name!r} split {split!r}: source {spec.kind}:{spec.id} has no labels in {str(expr)!r} (e.g. CLEVR's test split); use a labelled split")
    transform = spec.options.get("label_transform", "" if getattr(reader, "labels_mapped", False) else task.label_transform)
    labels = apply_label_transform(transform, raw)
    if labels.size and (labels.min() < 0 or labels.max() >= task.num_classes):
        raise VitbenchError(
            f"task {task.name!r} split {split!r}: labels from {spec.kind}:{spec.id} span {labels.min()}..{labels.max()} but the task has {task.num_classes} classes; check the source's label_transform"
        )
    lossy = bool(spec.options.get("lossy", reader.lossy))
    identity = reader.identity()
    payload = {
        "format": FORMAT_VERSION, "source": identity, "ranges": [r.to_dict() for r in ranges],
        "label_transform": transform, "num_classes": task.num_classes,
    }
    if order == "hashed":  # native-order fingerprints stay as they were (the same rows as before)
        payload["order"] = HASH_RULE
    fingerprint = stable_hash(payload)
    present = np.unique(labels)
    provenance = {
        "task": task.name, "split": split, "source": {**reader.provenance(), "lossy": lossy},
        "paper_expression": task.splits[split], "expression": str(expr),
        "ranges": [r.to_dict() for r in ranges], "n": len(pairs), "num_classes": task.num_classes,
        "classes_present": int(present.size), "lossy": lossy, "label_transform": transform,
        "order": order_provenance(order),
        "substitutions": [substitution] if substitution else [],
    }
    if spec.options.get("caveat"):
        provenance["caveats"] = [spec.options["caveat"]]
    return ImageSplit(
        labels=labels,
        fingerprint=fingerprint,
        provenance=provenance,
        load_image=lambda i: reader.image(*pairs[i]),
        describe=lambda i: reader.describe(*pairs[i]),
        keys=_keys(reader, pairs),
        load_bytes=lambda i: reader.image_bytes(*pairs[i]),
    )


def _hashed_order(reader: SourceReader, split: str) -> np.ndarray:
    """The class-mixing permutation of one source split (vitbench/data/order.py), keyed on example names;
    kept on the (per-process cached) reader, since a task slices the same source split several times."""
    memo = reader.__dict__.setdefault("_hashed_orders", {})
    if split not in memo:
        keys = [reader.order_key(split, row) for row in range(reader.split_sizes()[split])]
        memo[split] = hashed_permutation(split, [k if k is not None else f"#{row}" for row, k in enumerate(keys)])
    return memo[split]


def _prepared_state(task: TaskSpec, split: str, root: Path) -> str:
    manifest = read_manifest(root, task.name)
    if manifest is None:
        return "none"
    if split not in manifest.get("splits", {}):
        return f"has splits {sorted(manifest.get('splits', {}))}, not {split!r}"
    return "stale (prepared from a different split definition; rerun prepare with --force)"


_READERS: dict[str, SourceReader] = {}


def _open_cached(spec: SourceSpec, task: TaskSpec, root: Path) -> SourceReader:
    """Open a source once per process (runners load several splits of the same task)."""
    key = stable_hash({"kind": spec.kind, "id": spec.id, "options": spec.options, "root": str(root)})
    if key not in _READERS:
        _READERS[key] = open_source(spec, task, root)
    return _READERS[key]


def _keys(reader: SourceReader, pairs: list[tuple[str, int]]) -> list[str] | None:
    if not pairs or reader.key(*pairs[0]) is None:
        return None
    return [reader.key(s, r) for s, r in pairs]


def skip_corrupt_images(split: ImageSplit, progress=None) -> ImageSplit:
    """Decode every image once; return the split without the unreadable ones, counted in provenance."""
    good, bad = [], []
    for i in range(len(split)):
        try:
            split.image(i)
            good.append(i)
        except VitbenchError:
            bad.append(i)
        if progress is not None and (i % 256 == 0 or i == len(split) - 1):
            progress(f"checking images of {split.provenance.get('task')}/{split.provenance.get('split')}", i + 1, len(split))
    if not bad:
        return split
    note = {"skipped_corrupt": {"count": len(bad), "indices": bad[:1000], "files": [split.describe(i) for i in bad[:20]]}}
    return split.subset(good, note)


def suite_command_hint(task: TaskSpec, root: Path) -> str:
    """The exact `vitbench data prepare` command that would materialise `task` under `root`."""
    holders = []  # (number of tasks, suite name) of suites defining this task; the most specific wins
    for name, path in env.available_suites().items():
        try:
            tasks = tomllib.loads(path.read_text(encoding="utf-8")).get("tasks", [])
        except Exception:
            continue
        if any(isinstance(t, dict) and t.get("name") == task.name for t in tasks):
            holders.append((len(tasks), name))
    suite = min(holders)[1] if holders else "SUITE"
    return f"vitbench data prepare {suite} --tasks {task.name} --root {root}"


def load_split(
    task: TaskSpec, split: str, *, data_root: Path | str | None = None, skip_corrupt: bool = False,
    progress=None, use_prepared: bool = True,
) -> ImageSplit:
    """Images and labels of `task`'s named `split`: the prepared copy under the data root if there is one
    (unless `use_prepared=False`, as `data prepare` does), else the task's sources in order. Absent data
    raises one VitbenchError line naming what was tried and the `vitbench data prepare` command."""
    if split not in task.splits:
        raise unknown_name(f"split of task {task.name!r}", split, task.splits)
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    tried: list[str] = []
    result = load_prepared_split(task, split, root) if use_prepared else None
    if result is None and use_prepared:
        tried.append(f"prepared copy {root / task.name}: {_prepared_state(task, split, root)}")
    for spec in task.sources if result is None else ():
        if split in spec.options.get("unavailable", []):
            tried.append(f"{spec.kind}:{spec.id}: split not provided")
            continue
        if spec.kind == "prepared" and use_prepared:
            result = load_prepared_split(task, split, Path(spec.id).expanduser() if spec.id else root)
            if result is None:
                tried.append(f"prepared:{spec.id}: none")
                continue
            break
        try:
            reader = _open_cached(spec, task, root)
        except SourceUnavailable as exc:
            tried.append(f"{spec.kind}:{spec.id}: {exc}")
            continue
        try:
            result = split_from_reader(task, split, reader, spec)
        except SourceUnavailable as exc:
            tried.append(f"{spec.kind}:{spec.id}: {exc}")
            continue
        break
    if result is None:
        raise DataMissing(
            f"task {task.name!r} split {split!r}: no data found — tried " + "; ".join(tried)
            + f". Run `{suite_command_hint(task, root)}` where the sources are reachable (or copy a prepared folder there)"
        )
    expected = expected_size(task, split)
    if expected is not None and len(result) != expected:
        # VTAB-1k's named subsets and test splits have fixed sizes (docs/vtab.md#splits; test sizes from
        # task_adaptation `*_test.py`); a copy with other counts is incomplete (a truncated mirror)
        definer = "VTAB-1k" if split in VTAB1K_SIZES else f"task {task.name!r}"
        note = f"split {split!r} has {len(result)} images, {definer} defines {expected}: the data copy is incomplete"
        warnings.warn(f"task {task.name!r}: {note}", stacklevel=2)
        result.provenance.setdefault("caveats", []).append(note)
        result.provenance["incomplete"] = True
    if task.metric == "real" and split == task.test_split:
        result.real_labels = real_label_sets_for_split(result, task.options, root)
        result.provenance["real_labels"] = {"scored": sum(1 for s in result.real_labels if s), "n": len(result)}
    if skip_corrupt:
        result = skip_corrupt_images(result, progress)
    return result
