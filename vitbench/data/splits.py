"""Split expressions: parse TFDS-style slice strings and resolve them against a source's split sizes.

Owns the slice arithmetic behind every task split (`train[:800]+train[2754:2954]`, `test[50%:]`,
`validation[:200]`), exactly as TFDS/task_adaptation define them (docs/vtab.md#splits): plain prefixes and
ranges in source order, no shuffling, percent boundaries rounded to the closest index (TFDS "closest"
rounding). Exercised by `vitbench validate` (syntax) and every `vitbench run` / `vitbench data prepare`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vitbench.errors import VitbenchError

_TERM = re.compile(r"^\s*([A-Za-z_][\w\-]*)\s*(?:\[([^\]]*)\])?\s*$")
_BOUND = re.compile(r"^\s*([+-]?\d+)\s*(%?)\s*$")


@dataclass(frozen=True)
class Bound:
    """One slice boundary: an absolute index or a percentage of the split, possibly negative."""

    value: int
    percent: bool = False

    def absolute(self, size: int) -> int:
        if self.percent:
            # TFDS `_pct_to_abs_closest`: int(round(boundary * n / 100)).
            index = int(round(float(self.value) * size / 100.0))
        else:
            index = self.value
        if index < 0:
            index = size + index
        return max(0, min(size, index))

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class SliceTerm:
    """`split[start:stop]`; missing bounds mean the start / end of the split."""

    split: str
    start: Bound | None = None
    stop: Bound | None = None

    def bounds(self, size: int) -> tuple[int, int]:
        start = self.start.absolute(size) if self.start is not None else 0
        stop = self.stop.absolute(size) if self.stop is not None else size
        return start, max(start, stop)

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.split
        return f"{self.split}[{self.start or ''}:{self.stop or ''}]"


@dataclass(frozen=True)
class SplitExpr:
    """A `+`-joined list of slice terms, concatenated in order."""

    terms: tuple[SliceTerm, ...]

    @property
    def source_splits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.split for t in self.terms))

    def __str__(self) -> str:
        return "+".join(str(t) for t in self.terms)


@dataclass(frozen=True)
class IndexRange:
    """Rows `[start, stop)` of source split `split`."""

    split: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict:
        return {"split": self.split, "start": self.start, "stop": self.stop}


def _parse_bound(text: str, expr: str) -> Bound | None:
    if not text.strip():
        return None
    m = _BOUND.match(text)
    if not m:
        raise VitbenchError(
            f"bad slice bound {text.strip()!r} in split expression {expr!r}; use integers or percentages, e.g. 'train[:800]' or 'test[50%:]'"
        )
    return Bound(int(m.group(1)), bool(m.group(2)))


def parse_split(expr: str) -> SplitExpr:
    """Parse `name`, `name[a:b]`, `name[a%:b%]` terms joined by `+`; raise VitbenchError on bad syntax."""
    if not isinstance(expr, str) or not expr.strip():
        raise VitbenchError("empty split expression; write e.g. 'train[:800]' or 'train[:800]+validation[:200]'")
    terms = []
    for part in expr.split("+"):
        m = _TERM.match(part)
        if not m:
            raise VitbenchError(
                f"bad split expression {expr!r} (term {part.strip()!r}); write e.g. 'train[:800]', 'test[50%:]' or 'train[:800]+validation[:200]'"
            )
        name, inner = m.group(1), m.group(2)
        if inner is None:
            terms.append(SliceTerm(name))
            continue
        if inner.count(":") != 1:
            raise VitbenchError(
                f"bad slice {part.strip()!r} in split expression {expr!r}; a slice needs exactly one ':' as in 'train[2754:2954]'"
            )
        lo, hi = inner.split(":")
        terms.append(SliceTerm(name, _parse_bound(lo, expr), _parse_bound(hi, expr)))
    return SplitExpr(tuple(terms))


def resolve_split(expr: str | SplitExpr, sizes: dict[str, int], where: str = "") -> list[IndexRange]:
    """Absolute row ranges of `expr` given each source split's size; unknown source splits raise."""
    parsed = parse_split(expr) if isinstance(expr, str) else expr
    ranges = []
    for term in parsed.terms:
        if term.split not in sizes:
            prefix = f"{where}: " if where else ""
            raise VitbenchError(
                f"{prefix}split expression {str(parsed)!r} uses source split {term.split!r}, but the source has {sorted(sizes)}; fix the task's splits or the source's split_map"
            )
        size = sizes[term.split]
        # an absolute index past the end means the source is smaller than the task definition expects
        # (e.g. a partial mirror): refuse rather than silently return fewer images (percentages scale)
        need = max((abs(b.value) for b in (term.start, term.stop) if b is not None and not b.percent), default=0)
        if need > size:
            prefix = f"{where}: " if where else ""
            raise VitbenchError(
                f"{prefix}slice {str(term)!r} of {str(parsed)!r} needs at least {need} rows but source split "
                f"{term.split!r} has {size}; the source is incomplete or not the one the task expects"
            )
        start, stop = term.bounds(size)
        ranges.append(IndexRange(term.split, start, stop))
    return ranges


def range_indices(ranges: list[IndexRange]) -> list[tuple[str, int]]:
    """Flatten ranges into (source split, row) pairs, in expression order."""
    return [(r.split, i) for r in ranges for i in range(r.start, r.stop)]
