"""Reports: CSV tables and a self-contained HTML page beside the paper's numbers.

`build_report(records, out_dir)` writes `results_long.csv` (one row per record), `summary.csv` (mean ± std
over seeds), `vtab_means.csv`, `paper_comparison.csv`, plots and `index.html`. Exercised by
`vitbench report` and at the end of `vitbench run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitbench.errors import VitbenchError
from vitbench.report import html as html_report
from vitbench.report.plots import data_requirement_plot, loss_curve_plot
from vitbench.report.tables import aggregate, paper_comparison, summary_table, tidy, vtab_means

__all__ = ["build_report", "summary_table"]


def _records_view(long):
    """The per-record table for the HTML page: sorted, integer shots, blanks instead of None."""
    view = long.drop(columns=["key"]).sort_values(["suite", "task", "model", "method", "shots", "seed"], kind="stable")
    view["shots"] = view["shots"].astype("Int64")
    return view.astype(object).where(view.notna(), "")


def build_report(records: list[dict[str, Any]], out_dir: Path, title: str = "vitbench report") -> dict[str, Path]:
    """Write the CSV tables, plots and `index.html` for `records` into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VitbenchError(f"cannot create report folder {str(out_dir)!r} ({exc.strerror}); pass -o with a writable folder")
    long = tidy(records)
    agg = aggregate(long)
    summary = summary_table(records, agg)
    means = vtab_means(agg)
    comparison = paper_comparison(agg)
    paths = {
        "csv": out_dir / "summary.csv",
        "long_csv": out_dir / "results_long.csv",
        "vtab_csv": out_dir / "vtab_means.csv",
        "comparison_csv": out_dir / "paper_comparison.csv",
        "html": out_dir / "index.html",
    }
    summary.to_csv(paths["csv"], index=False)
    long.to_csv(paths["long_csv"], index=False)
    means.to_csv(paths["vtab_csv"], index=False)
    comparison.to_csv(paths["comparison_csv"], index=False)
    fewshot_png = data_requirement_plot(agg, out_dir / "data_requirement.png")
    loss_png = loss_curve_plot(records, out_dir / "finetune_loss.png")
    warnings = []
    if (long["pretrain"] == "random-init").any():
        warnings.append("Some results come from randomly initialised weights (random-init): they test the pipeline, "
                        "not a pretrained backbone, and are not comparable with the paper.")
    lossy = [r["task"] for r in records if any(((r.get("provenance") or {}).get(s) or {}).get("lossy") for s in ("train", "test"))]
    if lossy:
        warnings.append(f"Lossy (JPEG) copies of the data were used for: {', '.join(sorted(set(lossy)))}.")
    incomplete = [r["task"] for r in records if any(((r.get("provenance") or {}).get(s) or {}).get("incomplete") for s in ("train", "test"))]
    if incomplete:
        warnings.append(f"Incomplete data copies (a split with other than its defined size: VTAB-1k's 800/200/1000, or a task's expected test size) were used for: {', '.join(sorted(set(incomplete)))}.")
    versions = {k: v for r in records[:1] for k, v in (r.get("versions") or {}).items()}
    sections = [
        ("Summary (mean ± std over seeds, %)", html_report.frame_html(summary)),
        ("VTAB-1k means (%): mean over tasks and mean of group means", html_report.frame_html(means)),
        ("Beside the paper (Dosovitskiy et al. 2021)", html_report.frame_html(comparison)
         + "<p class='note'>Rows appear where model, pre-training data, task, method and metric all match a number in the paper's Tables 2, 5, 8 or 9.</p>"),
        ("Few-shot data requirement (accuracy vs examples per class)", html_report.image_html(fewshot_png, "data requirement")),
        ("Fine-tuning loss", html_report.image_html(loss_png, "fine-tuning loss")),
        ("All records", html_report.frame_html(_records_view(long))),
        ("Versions", html_report.frame_html(__import__("pandas").DataFrame([versions]))),
    ]
    paths["html"].write_text(html_report.render(title, sections, warnings), encoding="utf-8")
    for name, png in (("data_requirement_png", fewshot_png), ("loss_png", loss_png)):
        if png:
            paths[name] = png
    return paths
