"""The report's figures (matplotlib, Agg backend) drawn from metrics.json aggregates, as PNG bytes.

Individual predictions never appear: scatter and Bland-Altman plots are 2-D histograms (counts per
0.1 mmol/L cell) computed by ``ecgka evaluate``; the few-shot error curves are quantiles.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ecgka.catalog.info import DatasetInfo, LabelHistogram
from ecgka.evaluation.aggregates import dense_counts
from ecgka.metrics.clinical import CONDITIONS
from ecgka.report.collect import ReportModel, RunEntry, has_clinical
from ecgka.report.wording import grid_text, wording

GROUP_COLOURS = {"many": "#4c72b0", "median": "#dd8452", "few": "#c44e52"}
MAX_PANELS = 12
DPI = 72  # with 256-colour PNGs (``_palette``): ~100 runs' report stays under 3 MB (benchmarks/bench_report.py)


@dataclass
class Figure:
    name: str
    title: str
    png: bytes
    caption: str = ""


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return _palette(buf.getvalue())


def _palette(png: bytes) -> bytes:
    """The PNG with at most 256 colours (median cut; plots on white lose nothing visible): about a third of the
    bytes, which counts twice (the file and its base64 copy in report.html)."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
        out, format="PNG", optimize=True)
    return out.getvalue()


def _legend(ax, size: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size)


def _grid(n: int, size=(3.4, 2.8)):
    plt = _plt()
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def label_histogram(ds: DatasetInfo) -> Figure:
    """Training counts per label bin coloured by shot region, with val/test (paper Figures 1a, 3)."""
    plt = _plt()
    w_, cell = wording(ds), grid_text(ds)
    counts, k, w = ds.train_bins.array, ds.train_bins.centres(), ds.grid.step
    colour = np.full(counts.size, "#999999", dtype=object)
    for group, bins in ds.shot_groups.items():
        colour[np.asarray(bins, dtype=int)] = GROUP_COLOURS.get(group, "#999999")
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.bar(k, counts, width=w * 0.95, color=list(colour))
    for split, h in ds.histograms.items():
        if split != "train":
            ax.step(h.centres(), h.array, where="mid", lw=1, label=split)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in GROUP_COLOURS.values()]
    ax.legend(handles + ax.get_legend_handles_labels()[0],
              [f"{g}-shot (train)" for g in GROUP_COLOURS] + ax.get_legend_handles_labels()[1], fontsize=8)
    ax.set(xlabel=f"{w_.label} ({w_.unit})", ylabel=f"{w_.samples} per bin", yscale="symlog")
    return Figure("label_histogram", "Label distribution and shot regions", _png(fig),
                  f"Training {w_.samples} per {cell} bin, coloured by shot region; lines: val/test (symlog scale).")


def distribution_overlays(runs: list[RunEntry], ds: DatasetInfo) -> Figure:
    """Prediction vs label histograms per method (paper Figures 1b, 1c)."""
    w_ = wording(ds)
    fig, axes = _grid(len(runs))
    for ax, r in zip(axes, runs, strict=False):
        d = r.metrics["figures"]["distributions"]
        labels = LabelHistogram.from_dict(d, "figures.distributions", counts="labels")
        k = labels.centres()
        edges = np.append(k - labels.step / 2, k[-1] + labels.step / 2) if len(k) else np.zeros(1)
        # one filled step outline per histogram (not one bar patch per bin: ~20x faster at 12 panels)
        ax.stairs(labels.array, edges, fill=True, color="#dd8452", alpha=0.6, label="labels")
        ax.stairs(np.asarray(d["predictions"], dtype=float), edges, fill=True, color="#4c72b0", alpha=0.6,
                  label="predictions")
        ax.set_title(r.display_name, fontsize=9)
        ax.set_xlabel(f"{w_.symbol} ({w_.unit})", fontsize=8)
        ax.legend(fontsize=7)
    return Figure("distributions", "Prediction and label distributions", _png(fig),
                  f"Histogram of test labels (orange) and predictions (blue), {grid_text(ds)} bins.")


def few_shot_curves(runs: list[RunEntry], ds: DatasetInfo) -> Figure:
    """Sorted absolute errors in the few-shot region (paper Figure 5), as quantile curves."""
    plt = _plt()
    w_ = wording(ds)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for r in runs:
        c = r.metrics["figures"]["few_shot_error_curve"]
        if c["n"]:
            ax.plot(np.asarray(c["rank_fraction"]) * 100, c["abs_error"], label=f"{r.display_name} (n={c['n']})")
    ax.set(xlabel="rank of the error (percentile)", ylabel=f"absolute error ({w_.unit})")
    _legend(ax, 7)
    return Figure("few_shot_errors", "Sorted few-shot errors", _png(fig),
                  f"Absolute errors of the few-shot test {w_.samples}, sorted ascending; lower curves are better.")


def _density(ax, dens: dict, **kw) -> None:
    counts = dense_counts(dens).astype(float)
    extent = [*dens["x_range"], *dens["y_range"]]
    ax.imshow(np.ma.masked_equal(counts, 0), origin="lower", extent=extent, aspect="auto", cmap="viridis", **kw)


def scatter_densities(runs: list[RunEntry], ds: DatasetInfo) -> Figure:
    w_ = wording(ds)
    fig, axes = _grid(len(runs))
    for ax, r in zip(axes, runs, strict=False):
        dens = r.metrics["figures"]["scatter_density"]
        _density(ax, dens)
        ax.plot(dens["x_range"], dens["x_range"], color="k", lw=0.8)
        ax.set_title(r.display_name, fontsize=9)
        ax.set_xlabel(f"{w_.reference} {w_.symbol}", fontsize=8)
        ax.set_ylabel(f"predicted {w_.symbol}", fontsize=8)
    return Figure("scatter", f"Predicted vs {w_.reference} {w_.label}", _png(fig),
                  f"Density of ({w_.reference}, predicted) pairs per {grid_text(ds)} cell (no individual points); "
                  "line: identity.")


def bland_altman_plots(runs: list[RunEntry], ds: DatasetInfo) -> Figure:
    w_ = wording(ds)
    fig, axes = _grid(len(runs))
    for ax, r in zip(axes, runs, strict=False):
        _density(ax, r.metrics["figures"]["bland_altman_density"])
        ba = (r.metrics.get("clinical") or {}).get("bland_altman") or {}
        for key, style in (("bias", "-"), ("loa_lower", "--"), ("loa_upper", "--")):
            if ba.get(key) is not None:
                ax.axhline(ba[key], color="k", ls=style, lw=0.8)
        ax.set_title(r.display_name, fontsize=9)
        ax.set_xlabel(f"mean of predicted and {w_.reference} {w_.symbol}", fontsize=8)
        ax.set_ylabel("predicted - laboratory", fontsize=8)
    return Figure("bland_altman", "Bland-Altman", _png(fig),
                  "Density of (mean, difference) per cell; lines: bias and 95 % limits of agreement.")


def roc_curves(runs: list[RunEntry]) -> Figure:
    fig, axes = _grid(len(CONDITIONS), size=(3.6, 3.2))
    for ax, (name, cond) in zip(axes, CONDITIONS.items(), strict=False):
        for r in runs:
            roc = r.metrics["figures"]["roc"].get(name)
            if roc:
                auc = r.metrics["clinical"]["conditions"][name]["auroc"]
                ax.plot(roc["fpr"], roc["tpr"], lw=1, label=f"{r.display_name} {auc:.3f}")
        ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.6)
        ax.set_title(f"{cond.title} ({cond.definition})", fontsize=8)
        ax.set(xlabel="1 - specificity", ylabel="sensitivity")
        _legend(ax, 6)
    return Figure("roc", "ROC curves", _png(fig), "Detection from predicted K; legend: AUROC.")


def calibration_plot(runs: list[RunEntry]) -> Figure:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in runs:
        rows = r.metrics["clinical"]["calibration"]
        line = ax.plot([x["mean_predicted"] for x in rows], [x["mean_observed"] for x in rows], marker="o", ms=3,
                       lw=1, label=r.display_name)[0]
        fit = (r.metrics.get("calibration_fit") or {}).get("all") or {}
        if fit.get("slope") is not None and rows:
            x = np.array([rows[0]["mean_predicted"], rows[-1]["mean_predicted"]])
            ax.plot(x, fit["intercept"] + fit["slope"] * x, color=line.get_color(), ls="--", lw=0.8,
                    label=f"fit: slope {fit['slope']:.2f}")
    lim = ax.get_xlim()
    ax.plot(lim, lim, color="#bbbbbb", lw=0.6)
    ax.set(xlabel="mean predicted K", ylabel="mean laboratory K")
    ax.legend(fontsize=7)
    return Figure("calibration", "Calibration", _png(fig), "Mean laboratory K per 0.5 mmol/L bin of predicted K; "
                  "dashed: the fitted calibration line (OLS of laboratory on predicted K) over the predicted range.")


def variant_histograms(runs: list[RunEntry]) -> Figure | None:
    """Training distributions of the imbalance variants (paper Figure 4)."""
    seen: dict[str, DatasetInfo] = {}
    for r in runs:
        if r.dataset is not None:
            seen.setdefault(r.variant or "-", r.dataset)
    if not seen:
        return None
    fig, axes = _grid(len(seen))
    for ax, (name, ds) in zip(axes, seen.items(), strict=False):
        ax.bar(ds.train_bins.centres(), ds.train_bins.array, width=ds.train_bins.step, color="#4c72b0")
        ax.set_title(f"{name} (n_max {ds.n_max})", fontsize=9)
    return Figure("imbalance_variants", "Training distributions of the imbalance variants", _png(fig))


def all_figures(model: ReportModel) -> list[Figure]:
    """Every figure; ROC and calibration only for runs with clinical metrics (potassium)."""
    main = (model.main_runs or model.runs)[:MAX_PANELS]
    ds = model.main_dataset
    figs = [label_histogram(ds), distribution_overlays(main, ds), few_shot_curves(main, ds),
            scatter_densities(main, ds), bland_altman_plots(main, ds)]
    if has_clinical(main):
        figs += [roc_curves(main), calibration_plot(main)]
    variants = variant_histograms([r for r in model.runs if r.group == "imbalance"])
    return figs + ([variants] if variants else [])
