"""Report figures (matplotlib, Agg), all drawn from aggregated tables, never from raw records.

Each function returns a `Figure`: the PNG path, or the reason it was not drawn ("too little data: ...").
Figures: accuracy vs shots (seed error bars, one line per definition), the paper's Figure 3 (transfer
accuracy vs pre-training dataset size), Figure 4 (few-shot accuracy vs pre-training size), Figure 5
(accuracy vs pre-training compute, exaFLOPs from `vitbench.models.registry`), few-shot vs fine-tuning per
task, VTAB group bars, fine-tuning loss. Names are drawn as plain text (no math-text). Exercised by
`vitbench report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.models.registry import pretrain_exaflops, pretrain_images

TABLE6_CSV = Path(__file__).resolve().parent / "reference" / "table6.csv"
MAX_PANELS = 8
MAX_LINES = 12
DPI = 80


@dataclass
class Figure:
    title: str
    path: Path | None = None
    reason: str = ""
    caption: str = ""


def plain(text: Any) -> str:
    """`text` drawn literally: '$' would start matplotlib math-text, a leading '_' hides a legend entry."""
    s = str(text).replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def _figure(w: float, h: float):
    """A bare Agg figure: no pyplot (no global figure registry, the user's backend untouched); matplotlib is
    imported only when a figure has data to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _panels(n: int, w: float = 3.6, h: float = 2.9):
    """`n` panels, up to 4 a row; only the panels drawn on are created (no hidden empty axes)."""
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = _figure(w * cols, h * rows)
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _title(ax, text: str, fontsize: float) -> None:
    # y given: the title sits just above the axes (where it goes anyway: no axis draws on top) without
    # matplotlib measuring every tick label of the figure to place it
    ax.set_title(plain(text), fontsize=fontsize, y=1.0)


def _save(fig, path: Path, legend_ax=None) -> Path:
    """Save with one legend below the panels, gathered from every panel (each label once).

    Margins are set from the figure size instead of `tight_layout`, which costs seconds on many panels."""
    seen: dict[str, Any] = {}
    for ax in [legend_ax] if legend_ax is not None else fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    labels = list(seen)[:3 * MAX_LINES]
    handles = [seen[lab] for lab in labels]
    w, h = fig.get_size_inches()
    legend_in = 0.18 * ((len(labels) + 2) // 3) + 0.1 if labels else 0.0
    bottom = (0.55 + legend_in) / h
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.15 / w, top=1 - 0.3 / h, bottom=bottom, hspace=0.75, wspace=0.4)
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 3})  # fast PNG compression; size barely changes
    return Path(path)


def _line_label(r) -> str:
    w = r["pretrain"] if r["pretrain"] == "random-init" else r["weights_id"]
    return f"{r['model']} {w} {r['method']} [{str(r['row_setting']).split(', ', 1)[-1]}]"


def shots_plot(agg: pd.DataFrame, path: Path) -> Figure:
    """Few-shot accuracy vs examples per class (log x), one line per row definition, seed std bars."""
    fig_ = Figure("Accuracy vs examples per class (few-shot)", caption="Error bars: std over seeds. One line per definition.")
    fs = agg[agg["shots"].notna()] if not agg.empty else agg  # every method with a `shots` parameter
    if fs.empty or fs["shots"].nunique() < 2:
        fig_.reason = "too little data: needs few-shot results at two or more shot counts"
        return fig_
    tasks = list(dict.fromkeys(fs["task"]))[:MAX_PANELS]
    from matplotlib import ticker

    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = fs[fs["task"] == task]
        for _, line in list(part.groupby("line_id", sort=False))[:MAX_LINES]:
            line = line.sort_values("shots")
            ax.errorbar(line["shots"], line["mean"], yerr=line["std"], marker="o", ms=4, capsize=2, label=plain(_line_label(line.iloc[0])))
        ax.set_xscale("log")
        ax.set_xticks(sorted(part["shots"].unique()))
        ax.get_xaxis().set_major_formatter(ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_locator(ticker.NullLocator())  # log minor ticks: clutter, and slow to draw
        _title(ax, task, 9)
        ax.set_xlabel("examples per class")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    if len(set(fs["task"])) > MAX_PANELS:
        fig_.caption += f" First {MAX_PANELS} tasks shown; the CSV tables hold all."
    fig_.path = _save(fig, path)
    return fig_


def _with_size(frame: pd.DataFrame, fn) -> pd.DataFrame:
    return frame.assign(x=[fn(r) for r in frame.to_dict("records")]).dropna(subset=["x"])


def pretrain_size_plot(agg: pd.DataFrame, reference: pd.DataFrame, path: Path) -> Figure:
    """Figure 3 style: fine-tuned accuracy vs pre-training images, measured points beside Table 5's lines."""
    fig_ = Figure("Transfer accuracy vs pre-training dataset size (paper Figure 3)",
                  caption="Solid markers: measured (fine-tuning). Dashed: the paper's Table 5 (fine-tuned at 384 px).")
    ft = agg[(agg["method"] == "finetune") & (agg["stage"] != "select")] if not agg.empty else agg
    ft = _with_size(ft, lambda r: pretrain_images(r["pretrain"])) if not ft.empty else ft
    if ft.empty:
        fig_.reason = ("too little data: needs fine-tuning results from weights with a known pre-training dataset "
                       "(ImageNet-1k, ImageNet-21k or JFT-300M); these results have none (e.g. random-init)")
        return fig_
    ref = reference[reference["source"].str.startswith("Table 5")]
    ref = ref.assign(x=[pretrain_images(p) for p in ref["pretrain"]])
    # a panel needs a curve: the paper's Table 5 line for the task, or measured points at two dataset sizes
    spread = ft.groupby("task")["x"].nunique()
    tasks = [t for t in dict.fromkeys(ft["task"]) if t in set(ref["task"]) or spread[t] > 1][:MAX_PANELS]
    if not tasks:
        fig_.reason = ("too little data: needs fine-tuning results on a dataset of the paper's Table 5 (ImageNet, "
                       "CIFAR-10/100, Pets, Flowers) or on one task from weights pre-trained on two datasets of different size")
        return fig_
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = ft[ft["task"] == task]
        for model, pts in ref[(ref["task"] == task) & ref["model"].isin(set(part["model"]))].groupby("model"):
            pts = pts.sort_values("x")
            ax.plot(pts["x"], pts["value"], "--", marker="x", alpha=0.7, label=plain(f"paper {model}"))
        for _, pts in list(part.groupby("row_id", sort=False))[:MAX_LINES]:
            ax.errorbar(pts["x"], pts["mean"], yerr=pts["std"], marker="o", ls="none", capsize=3,
                        label=plain(f"measured {pts.iloc[0]['model']} {pts.iloc[0]['pretrain']} [{pts.iloc[0]['row_setting']}]"))
        _finish(ax, task, "pre-training images", log=True)
    fig_.path = _save(fig, path)
    return fig_


def _finish(ax, task: str, xlabel: str, log: bool) -> None:
    if log:
        from matplotlib import ticker

        ax.set_xscale("log")
        ax.get_xaxis().set_minor_locator(ticker.NullLocator())
    _title(ax, task, 9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)


def fewshot_pretrain_plot(agg: pd.DataFrame, path: Path) -> Figure:
    """Figure 4 style: few-shot accuracy vs pre-training images, one line per model and shots."""
    fig_ = Figure("Few-shot accuracy vs pre-training dataset size (paper Figure 4)",
                  caption="The paper publishes Figure 4 as a plot only (no numbers), so no paper points are drawn.")
    fs = agg[(agg["method"] == "fewshot") & agg["shots"].notna()] if not agg.empty else agg
    fs = _with_size(fs, lambda r: pretrain_images(r["pretrain"])) if not fs.empty else fs
    if fs.empty:
        fig_.reason = ("too little data: needs few-shot results from weights with a known pre-training dataset "
                       "(ImageNet-1k, ImageNet-21k or JFT-300M)")
        return fig_
    spread = fs.groupby("task")["x"].nunique()
    tasks = [t for t in dict.fromkeys(fs["task"]) if spread[t] > 1][:MAX_PANELS]
    if not tasks:
        fig_.reason = ("too little data: needs few-shot results on one task from weights pre-trained on at least two "
                       "datasets of different size (e.g. ImageNet-1k and ImageNet-21k)")
        return fig_
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = fs[fs["task"] == task]
        for (model, shots, line), pts in list(part.groupby(["model", "shots", "row_setting"], sort=False))[:MAX_LINES]:
            pts = pts.sort_values("x")
            # a line joins weights of different pre-training data only when nothing else differs (one point per x)
            joined = not pts["x"].duplicated().any()
            ax.errorbar(pts["x"], pts["mean"], yerr=pts["std"], marker="o", capsize=3, ls="-" if joined else "none",
                        label=plain(f"{model} {line}" + ("" if joined else " (several definitions: points only)")))
        _finish(ax, task, "pre-training images", log=True)
    fig_.path = _save(fig, path)
    return fig_


def compute_plot(agg: pd.DataFrame, path: Path) -> Figure:
    """Figure 5 style: accuracy vs pre-training exaFLOPs (registry), measured beside Table 6."""
    fig_ = Figure("Transfer accuracy vs pre-training compute (paper Figure 5)",
                  caption="x: pre-training exaFLOPs from the paper's Table 6 (JFT-300M runs only). Dashed: Table 6.")
    ft = agg[(agg["stage"] != "select")] if not agg.empty else agg
    ft = _with_size(ft, lambda r: pretrain_exaflops(r["model"], r["pretrain"])) if not ft.empty else ft
    if ft.empty:
        used = ", ".join(sorted({p for p in agg["pretrain"]} if not agg.empty else set())) or "none"
        fig_.reason = ("too little data: the paper gives pre-training compute only for JFT-300M runs (Table 6); "
                       f"no result here comes from such weights (pre-training data: {used})")
        return fig_
    t6 = pd.read_csv(TABLE6_CSV)
    tasks = list(dict.fromkeys(ft["task"]))[:MAX_PANELS]
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        if task in t6.columns:
            for family, pts in t6.groupby("family"):
                pts = pts.sort_values("exaflops")
                ax.plot(pts["exaflops"], pts[task], "--", marker="x", alpha=0.6, label=plain(f"paper {family} (Table 6)"))
        for _, pts in list(ft[ft["task"] == task].groupby("row_id", sort=False))[:MAX_LINES]:
            ax.errorbar(pts["x"], pts["mean"], yerr=pts["std"], marker="o", ls="none", capsize=3,
                        label=plain(f"measured {pts.iloc[0]['model']} {pts.iloc[0]['pretrain']} {pts.iloc[0]['method']}"))
        _finish(ax, task, "pre-training compute (exaFLOPs)", log=True)
    fig_.path = _save(fig, path)
    return fig_


def fewshot_vs_finetune_plot(agg: pd.DataFrame, path: Path) -> Figure:
    """Per task: few-shot accuracy (y, one series per shot count) against fine-tuning accuracy (x) of the same
    model and weights; one panel per model / weights, the diagonal marks equal accuracy."""
    fig_ = Figure("Few-shot vs fine-tuning per task",
                  caption="One point per task: x = fine-tuning, y = few-shot (one colour per setting); error bars: "
                          "std over seeds; dashed: equal accuracy. Tasks are named beside their points when few.")
    sub = agg[agg["stage"] != "select"] if not agg.empty else agg
    both = set(sub.loc[sub["method"] == "fewshot", "task"]) & set(sub.loc[sub["method"] == "finetune", "task"]) if not sub.empty else set()
    if not both:
        fig_.reason = "too little data: needs few-shot and fine-tuning results on the same task"
        return fig_
    sub = sub[sub["task"].isin(both) & sub["method"].isin(["fewshot", "finetune"])]
    groups = list(sub.groupby(["model", "weights_id"], sort=False))[:MAX_PANELS]
    fig, axes = _panels(len(groups), w=4.2, h=3.8)
    for ax, ((model, wid), part) in zip(axes, groups):
        ft = part[part["method"] == "finetune"]
        if ft["task"].duplicated().any():  # several fine-tuning definitions: one series per definition
            ft_sets = list(ft.groupby("row_id", sort=False))
        else:
            ft_sets = [("", ft)]
        fs = part[part["method"] == "fewshot"]
        for _, ft_part in ft_sets[:3]:
            x = dict(zip(ft_part["task"], zip(ft_part["mean"], ft_part["std"])))
            for setting, pts in list(fs.groupby("setting", sort=False))[:MAX_LINES]:
                pts = pts[pts["task"].isin(x)].drop_duplicates("task")
                xs = [x[t] for t in pts["task"]]
                label = setting if len(ft_sets) == 1 else f"{setting} vs {ft_part['setting'].iloc[0]}"
                ax.errorbar([v[0] for v in xs], pts["mean"], xerr=[v[1] for v in xs], yerr=pts["std"], fmt="o", ms=4,
                            capsize=0, label=plain(label))
            if len(x) <= 8:  # name the tasks above their highest few-shot point when there are few
                tops = fs.groupby("task")["mean"].max()
                for t, (m, _) in x.items():
                    if t in tops:
                        ax.annotate(plain(t), (m, tops[t]), textcoords="offset points", xytext=(0, 4), fontsize=6, alpha=0.7)
        lo, hi = ax.get_xlim()
        ax.plot([0, 100], [0, 100], "--", color="grey", lw=0.8)
        ax.set_xlim(max(0, lo - 5), min(100, hi + 5))
        ax.set_xlabel("fine-tuning accuracy (%)")
        ax.set_ylabel("few-shot accuracy (%)")
        _title(ax, f"{model} {wid}", 8)
        ax.grid(alpha=0.3)
    fig_.path = _save(fig, path)
    return fig_


def vtab_groups_plot(vtab_numeric: pd.DataFrame, paper_rows: pd.DataFrame, path: Path) -> Figure:
    """VTAB group means (natural / specialized / structured / all) per row, the paper's Table 9 rows beside."""
    fig_ = Figure("VTAB-1k by group (paper Figure 2)",
                  caption="Paper bars: group means computed from Table 9's per-task numbers (the paper prints none). "
                          "Measured means over fewer tasks than the group are marked in the VTAB table.")
    if vtab_numeric.empty:
        fig_.reason = "too little data: needs results on VTAB-1k tasks (groups natural, specialized, structured)"
        return fig_
    series = []
    for r in vtab_numeric.to_dict("records")[:MAX_LINES]:
        series.append((f"{r['model']} {r['method']} [{r['setting']}]",
                       [r["natural_mean"], r["specialized_mean"], r["structured_mean"], r["mean_over_tasks"]]))
    for r in paper_rows.to_dict("records"):
        vals = [_num(r.get(f"{g} mean ({n} tasks)")) for g, n in (("natural", 7), ("specialized", 4), ("structured", 8))]
        series.append((f"paper {r['model']} {r['pretrain']}", vals + [_num(r.get("mean over 19 tasks"))]))
    fig = _figure(7.5, 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series):
        ax.bar([j + i * width for j in range(4)], vals, width, label=plain(name))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(4)])
    ax.set_xticklabels(["natural", "specialized", "structured", "all tasks"])
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    fig_.path = _save(fig, path, legend_ax=ax)
    return fig_


def _num(text: Any) -> float:
    try:
        return float(str(text).split()[0])
    except (ValueError, IndexError):
        return float("nan")


def loss_curve_plot(curves: list[dict[str, Any]], path: Path) -> Figure:
    """Training loss against step for up to 10 fine-tuning runs (`curves`: label + loss_curve)."""
    fig_ = Figure("Fine-tuning loss", caption="Training loss (log scale) of up to 10 fine-tuning runs (all are in the records).")
    if not curves:
        fig_.reason = "too little data: no fine-tuning record carries a loss curve"
        return fig_
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    for c in curves[:10]:
        ax.plot([p["step"] for p in c["curve"]], [p["loss"] for p in c["curve"]], label=plain(c["label"]))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.85 / 6, right=1 - 0.15 / 6, top=1 - 0.15 / 3.5, bottom=0.5 / 3.5)  # no tight_layout
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 3})
    fig_.path = Path(path)
    return fig_
