"""The self-contained HTML page: escaped tables, sortable headers, embedded PNG figures, provenance footer.

Every text (task, model, suite names, notes) is HTML-escaped; figures are base64 PNGs inside the file; a small
inline script sorts a table when its header is clicked (numeric when the cell starts with a number, missing
cells last) and honours `#sort=<table id>:<column index>[:desc]` in the URL, so a sorted view can be linked
(and tested headless). Tables longer than `max_rows` show their first rows and link to the full CSV beside
the page, so the page stays small for any number of records. Exercised by `vitbench report`.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1400px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;position:relative}th:hover{background:#e8eef8}tr:nth-child(even){background:#fafafa}
.note{color:#555;font-size:.85rem}.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5rem 1rem}
img{max-width:100%;border:1px solid #eee}footer{margin-top:3rem;border-top:1px solid #ddd;font-size:.8rem;color:#444}
"""
SORT_JS = r"""
function vbKey(td){const t=td.textContent.trim();const n=parseFloat(t.replace(/^[+]/,''));return isNaN(n)?[1,t]:[0,n]}
function vbSort(table,i,desc){const body=table.tBodies[0];const rows=[...body.rows];
rows.sort((a,b)=>{const x=vbKey(a.cells[i]),y=vbKey(b.cells[i]);if(x[0]!==y[0])return x[0]-y[0];
const c=x[0]===0?x[1]-y[1]:String(x[1]).localeCompare(String(y[1]));return desc?-c:c});
rows.forEach(r=>body.appendChild(r));table.dataset.sorted=i+(desc?':desc':':asc')}
document.querySelectorAll('table.sortable').forEach(t=>{[...t.tHead.rows[0].cells].forEach((th,i)=>{
th.title='click to sort';th.addEventListener('click',()=>{const desc=t.dataset.sorted===i+':asc';vbSort(t,i,desc)})})});
(function(){const m=location.hash.match(/^#sort=([\w-]+):(\d+)(:desc)?$/);if(!m)return;
const t=document.getElementById(m[1]);if(!t||!t.tHead)return;const th=t.tHead.rows[0].cells[+m[2]];if(!th)return;
th.click();if(m[3])th.click()})();
"""


def frame_html(frame: pd.DataFrame, table_id: str, max_rows: int | None = None, csv_name: str | None = None) -> str:
    """A sortable, escaped table (or '' when empty); rows beyond `max_rows` are left to `csv_name`."""
    if frame is None or frame.empty:
        return ""
    tail = ""
    if max_rows is not None and len(frame) > max_rows:
        link = f" (<a href='{html.escape(csv_name)}'>{html.escape(csv_name)}</a>)" if csv_name else ""
        tail = f"<p class='note'>First {max_rows} of {len(frame)} rows; all rows are in the CSV beside this page{link}.</p>"
        frame = frame.head(max_rows)
    shown = frame.astype(object).where(frame.notna(), "")
    body = shown.to_html(index=False, escape=True, na_rep="", border=0, table_id=table_id, classes="sortable",
                         float_format=lambda v: f"{v:.2f}")
    return f"<div class='scroll'>{body}</div>{tail}"


def image_html(path: Path | None, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'>"


def note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def provenance(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, text) lines covering every record: versions, commits, hardware, command lines, time range."""
    def counts(values) -> str:
        seen: dict[str, int] = {}
        for v in values:
            seen[v] = seen.get(v, 0) + 1
        return "; ".join(f"{k} ({n})" for k, n in sorted(seen.items(), key=lambda kv: -kv[1])[:12]) + (
            f"; +{len(seen) - 12} more" if len(seen) > 12 else "")

    def versions(r):
        v = r.get("versions") or {}
        return ", ".join(f"{k} {v[k]}" for k in ("vitbench", "torch", "timm", "numpy") if v.get(k)) or "unknown"

    def hardware(r):
        h = r.get("hardware") or {}
        return ", ".join(str(h[k]) for k in ("device", "cuda", "processor", "cpu_count") if h.get(k)) or "unknown"

    stamps = sorted(str(r.get("timestamp")) for r in records if r.get("timestamp"))
    return [
        ("records", str(len(records))),
        ("versions", counts(versions(r) for r in records)),
        ("git commits", counts(str(r.get("git_commit") or "unknown") for r in records)),
        ("hardware", counts(hardware(r) for r in records)),
        ("command lines", counts(str(r.get("command") or "not recorded") for r in records)),
        ("time range (UTC)", f"{stamps[0]} to {stamps[-1]}" if stamps else "not recorded"),
    ]


def render(title: str, sections: list[tuple[str, str]], warnings: list[str], footer: list[tuple[str, str]]) -> str:
    """The page; sections whose content is empty are left out (no empty sections)."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<p class='warn'>{html.escape(w)}</p>" for w in warnings]
    for heading, content in sections:
        if content:
            body.append(f"<section><h2>{html.escape(heading)}</h2>{content}</section>")
    foot = "".join(f"<div><b>{html.escape(k)}:</b> {html.escape(v)}</div>" for k, v in footer)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + f"<footer id='provenance'><h2>Provenance</h2>{foot}</footer><script>{SORT_JS}</script></body></html>"
    )
