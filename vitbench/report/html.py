"""A self-contained HTML report: summary, VTAB group means, paper comparison, plots, provenance.

Exercised by `vitbench report` (and `vitbench run`, which writes a report when it finishes). Tables come
from `vitbench.report.tables`; plots are embedded as base64 PNGs so the file can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
th{background:#f4f4f4;cursor:pointer}tr:nth-child(even){background:#fafafa}.note{color:#666;font-size:.85rem}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5rem 1rem}img{max-width:100%}
"""
SORT_JS = """
document.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>{const t=th.closest('table'),
i=[...th.parentNode.children].indexOf(th),rows=[...t.querySelectorAll('tbody tr')],asc=th.dataset.asc!=='1';
th.dataset.asc=asc?'1':'0';rows.sort((a,b)=>{const x=a.children[i].innerText,y=b.children[i].innerText,
nx=parseFloat(x),ny=parseFloat(y);const c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c});
rows.forEach(r=>t.querySelector('tbody').appendChild(r))}));
"""


def frame_html(frame: pd.DataFrame, float_fmt: str = "{:.2f}") -> str:
    if frame is None or frame.empty:
        return "<p class='note'>(nothing to show)</p>"
    return frame.to_html(index=False, escape=True, na_rep="", float_format=lambda v: float_fmt.format(v), border=0)


def image_html(path: Path | None, alt: str) -> str:
    if not path:
        return "<p class='note'>(not enough data for this plot)</p>"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def render(title: str, sections: list[tuple[str, str]], warnings: list[str]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<p class='warn'>{html.escape(w)}</p>" for w in warnings]
    for heading, content in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>{content}")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SORT_JS}</script></body></html>"
    )
