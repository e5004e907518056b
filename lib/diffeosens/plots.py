"""Figures of the book and the notebooks (seaborn), built from results datasets.

Every function takes an :class:`xarray.Dataset` opened with :mod:`diffeosens.results` and returns
a matplotlib/seaborn object; book pages only call these and add text. Seeds (and channel
shuffles) are aggregated with :func:`diffeosens.stats.seed_mean`, as in the claims.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .diffeo import PAPER_DELTA
from .results import default_root, output_layer
from .stats import seed_mean

__all__ = ["add_error_bands", "book_context", "download_links", "layer_frame", "plot_layer_profiles", "tidy"]

QUANTITY_LABELS = {"D": "$D_k$ (diffeo)", "G": "$G_k$ (noise)", "R": "$R_k = D_k/G_k$"}


def book_context() -> tuple[str, Path]:
    """The profile and results root the book is built from (``DIFFEOSENS_PROFILE``, default quick)."""
    from .profiles import DEFAULT

    return os.environ.get("DIFFEOSENS_PROFILE", DEFAULT), default_root()


def download_links(experiments: Sequence[str], *, profile: str, root: str | os.PathLike, book_dir: str | os.PathLike = ".") -> Any:
    """Offer the data of a book page for download: each experiment's runs, combined into one netCDF4
    file (as :func:`diffeosens.results.open_experiment` gives them), are written to
    ``<book_dir>/_extra/results/<profile>/<experiment>.nc``, which the book publishes at its root
    (``html_extra_path``); returns the HTML links (no kernel or network needed to follow them)."""
    from html import escape

    from IPython.display import HTML

    from .results import open_experiment, save

    items = []
    for experiment in experiments:
        ds = open_experiment(experiment, profile=profile, root=root)
        ds.attrs = {"title": f"diffeosens results: experiment {experiment!r}, {profile} profile",
                    "source": "every run of the experiment, combined by diffeosens.results.open_experiment",
                    }
        rel = Path("results") / profile / f"{experiment}.nc"
        path = save(ds, Path(book_dir) / "_extra" / rel)
        size = path.stat().st_size / 1024
        items.append(f'<a href="{escape(rel.as_posix())}" download>{escape(experiment)}.nc</a> ({size:,.0f} kB)')
    return HTML('<p class="diffeosens-download">Data behind this page (' + escape(profile) + " profile, netCDF4): " + ", ".join(items)
                + ' &mdash; open it with <code>xarray.open_dataset(path, engine="netcdf4")</code>.</p>')


def tidy(ds: xr.Dataset, variables: Sequence[str]) -> pd.DataFrame:
    """A long DataFrame of ``variables`` with every coordinate as a column (NaN rows dropped).

    A column ``se`` holds the standard error ``<variable>_se`` where the dataset has one (NaN
    otherwise): the jackknife/bootstrap error over probe images of :func:`~diffeosens.measure`,
    carried through the seed aggregation by :func:`~diffeosens.stats.seed_mean`.
    """
    present_se = [f"{v}_se" for v in variables if f"{v}_se" in ds]
    df = ds[list(variables) + present_se].to_dataframe().reset_index()
    id_vars = [c for c in df.columns if c not in variables and c not in present_se]
    long = df.melt(id_vars=id_vars, value_vars=list(variables), var_name="quantity", value_name="value")
    se = df.melt(id_vars=id_vars, value_vars=list(variables), var_name="quantity", value_name="se")
    for v in variables:
        mask = (se["quantity"] == v).to_numpy()
        se.loc[mask, "se"] = df[f"{v}_se"].to_numpy() if f"{v}_se" in df else np.nan
    long["se"] = se["se"].to_numpy(dtype=float)
    return long.dropna(subset=["value"])


def add_error_bands(g: Any, df: pd.DataFrame, *, x: str, hue: str | None, row: str | None, col: str | None) -> None:
    r"""Shade :math:`\text{value} \pm \text{se}` (column ``se`` of ``df``) under every line of a
    seaborn ``relplot`` ``g`` drawn from ``df`` (same ``x``, ``hue``, ``row``, ``col``), in the
    lines' colours; rows without a finite ``se`` get no band. On a log axis the band is clipped
    at 1 % of the value."""
    import seaborn as sns

    if "se" not in df or not np.isfinite(df["se"].to_numpy(dtype=float)).any():
        return
    levels = list(pd.unique(df[hue])) if hue and hue in df else [None]
    if hue and hue in df and pd.api.types.is_numeric_dtype(df[hue]):
        levels = sorted(levels)
    colors = dict(zip(levels, sns.color_palette(n_colors=len(levels))))
    keys = [k for k in (row, col) if k and k in df]
    groups = df.groupby(keys, sort=False) if keys else [((), df)]
    for key, facet in groups:
        key = key if isinstance(key, tuple) else (key,)
        ax = g.axes_dict[key if len(key) > 1 else key[0]] if keys else g.ax
        for level in levels:
            sub = facet if level is None else facet[facet[hue] == level]
            sub = sub.sort_values(x)
            lo = (sub["value"] - sub["se"]).clip(lower=0.01 * sub["value"])
            hi = sub["value"] + sub["se"]
            ok = np.isfinite(lo.to_numpy(dtype=float)) & np.isfinite(hi.to_numpy(dtype=float))
            if ok.any():
                ax.fill_between(sub[x].to_numpy()[ok], lo.to_numpy()[ok], hi.to_numpy()[ok], color=colors[level], alpha=0.2, lw=0)


def layer_frame(ds: xr.Dataset, quantities: Sequence[str] = ("D", "G", "R")) -> pd.DataFrame:
    """Per-layer quantities with ``layer_name``, ``layer_kind``, ``relative_depth`` as columns."""
    df = tidy(ds, quantities)
    return df[df["layer_name"].notna()]


def plot_layer_profiles(
    ds: xr.Dataset,
    *,
    delta: float | None = PAPER_DELTA,
    x: str = "relative_depth",
    quantities: Sequence[str] = ("D", "G", "R"),
    row: str | None = "arch",
    hue: str = "state",
    height: float = 2.4,
    aspect: float = 1.3,
) -> Any:
    r""":math:`D_k, G_k, R_k` against depth, one column per quantity (log scale), shaded by
    :math:`\pm` one standard error; seeds aggregated by :func:`~diffeosens.stats.seed_mean`. ``delta`` selects one typical displacement of a
    ``measure`` result; ``None`` for data without a ``delta`` dimension (already selected, or
    from ``measure_perturbed``)."""
    import seaborn as sns

    sel = seed_mean(ds.sel(delta=delta) if delta is not None else ds)
    df = layer_frame(sel, quantities)
    df["quantity"] = df["quantity"].map(lambda q: QUANTITY_LABELS.get(q, q))
    row = row if row in df.columns else None
    g = sns.relplot(df, x=x, y="value", hue=hue, col="quantity", row=row, kind="line",
                    marker="o", markersize=4, height=height, aspect=aspect, facet_kws={"sharey": False, "margin_titles": True},
                    errorbar=None)
    add_error_bands(g, df, x=x, hue=hue, row=row, col="quantity")
    g.set(yscale="log")
    g.set_titles(col_template="{col_name}", row_template="{row_name}")
    g.set_axis_labels("relative depth" if x == "relative_depth" else x, "")
    return g


def ratio_last_first(ds: xr.Dataset, var: str, *, kinds: Sequence[str] = ("act", "output")) -> xr.DataArray:
    """``var`` at the last probe point over ``var`` at the first one of the given kinds."""
    v = ds[var].where(ds.layer_kind.isin(list(kinds)))
    ok = v.notnull()
    first = ok.argmax("layer")
    last = ok.sizes["layer"] - 1 - ok.isel(layer=slice(None, None, -1)).argmax("layer")
    return v.isel(layer=last) / v.isel(layer=first)


# ------------------------------------------------------------------------------------------------
# chapter figures
# ------------------------------------------------------------------------------------------------


def plot_error_vs_rf(ds: xr.Dataset, *, prefactor: float = 0.2) -> Any:
    """Test error against :math:`R_f` (log–log) for trained nets, with :math:`\\epsilon = 0.2\\sqrt{R_f}`
    (horizontal bars: one standard error of :math:`R_f` and :math:`D_f`)."""
    import matplotlib.pyplot as plt

    out = output_layer(ds.sel(state="trained", delta=PAPER_DELTA))
    agg = seed_mean(out[["R", "R_se", "D", "D_se", "test_error"]])
    r, err, d = agg.R, agg.test_error, agg.D
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, x, xse, name in ((axes[0], r, agg.R_se, "$R_f$"), (axes[1], d, agg.D_se, "$D_f$")):
        for arch in ds.arch.values:
            ax.errorbar(float(x.sel(arch=arch)), float(err.sel(arch=arch)), xerr=float(xse.sel(arch=arch)), fmt="o", ms=5,
                        capsize=2, label=str(arch))
            ax.annotate(str(arch), (float(x.sel(arch=arch)), float(err.sel(arch=arch))), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(name + " (trained)")
        ax.set_ylabel("test error")
    xs = np.logspace(np.log10(max(float(r.min()) / 3, 1e-6)), np.log10(max(float(r.max()) * 3, 1e-5)), 50)
    axes[0].loglog(xs, prefactor * np.sqrt(xs), "k--", lw=1, label=r"$0.2\sqrt{R_f}$")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_output_sensitivities(ds: xr.Dataset, x: str, *, xscale: str = "linear") -> Any:
    r"""Output :math:`D_f, G_f, R_f` against a grid dimension ``x`` (e.g. training noise), init vs trained,
    shaded by :math:`\pm` one standard error (seeds aggregated by :func:`~diffeosens.stats.seed_mean`)."""
    import seaborn as sns

    out = seed_mean(output_layer(ds.sel(delta=PAPER_DELTA)))
    df = tidy(out.drop_vars([c for c in ("layer_name", "layer_kind", "depth", "relative_depth") if c in out.coords]), ["D", "G", "R"])
    df["quantity"] = df["quantity"].map(lambda q: QUANTITY_LABELS.get(q, q))
    many_archs = "arch" in df and df["arch"].nunique() > 1
    g = sns.relplot(df, x=x, y="value", hue="state", col="quantity", style="arch" if many_archs else None,
                    kind="line", marker="o", height=2.8, aspect=1.1, facet_kws={"sharey": False}, errorbar=None)
    if not many_archs:  # with several networks per colour the bands would overlap illegibly
        add_error_bands(g, df, x=x, hue="state", row=None, col="quantity")
    g.set(yscale="log", xscale=xscale)
    g.set_titles("{col_name}")
    return g


def plot_variants(ds: xr.Dataset, *, var: str = "D", variant_dim: str = "variant", height: float = 2.6) -> Any:
    """One quantity against relative depth, one panel per architecture, one line per variant (seeds and
    channel shuffles aggregated by :func:`~diffeosens.stats.seed_mean`)."""
    import seaborn as sns

    da = seed_mean(seed_mean(ds[var], "shuffle"))
    sub = da.to_dataset(name=var)
    for c in ("relative_depth", "layer_kind"):
        if c in ds.coords:
            sub = sub.assign_coords({c: ds[c]})
    df = layer_frame(sub, [var])
    g = sns.relplot(df, x="relative_depth", y="value", hue=variant_dim, col="arch", col_wrap=4, kind="line", marker="o",
                    markersize=4, height=height, aspect=1.1, facet_kws={"sharey": False}, errorbar=None)
    g.set(yscale="log")
    g.set_titles("{col_name}")
    g.set_axis_labels("relative depth", QUANTITY_LABELS.get(var, var))
    return g


def plot_spectra(ds: xr.Dataset, arch: str) -> Any:
    """Normalised filter spectra per layer, init vs trained, for one network."""
    import matplotlib.pyplot as plt

    a = seed_mean(ds.sel(arch=arch))
    layers = [l for l in a.layer.values if np.isfinite(a.S_norm.sel(state="trained", layer=l)).any()]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, state in zip(axes, ("init", "trained")):
        for i, l in enumerate(layers):
            s = a.S_norm.sel(state=state, layer=l)
            ok = np.isfinite(s.values)
            name = str(a.layer_name.sel(layer=l).values) if "layer_name" in a.coords else str(l)
            ax.plot(s.eigenvalue.values[ok], s.values[ok], "o-", color=cmap(i / max(len(layers) - 1, 1)), ms=3, label=name)
        ax.set_title(f"{arch} [{state}]")
        ax.set_xlabel(r"Laplacian eigenvalue $\lambda$")
        ax.set_yscale("log")
    axes[0].set_ylabel(r"$S_k(\lambda)/\sum_\lambda S_k$")
    axes[1].legend(fontsize=6, ncol=2, title="layer (early → late)", title_fontsize=7)
    fig.tight_layout()
    return fig


def plot_theory(ds: xr.Dataset) -> Any:
    """Simulated :math:`D_k, G_k, R_k` of the constant-filter CNN against the closed forms."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(ds.stride), 3, figsize=(10, 3.0 * len(ds.stride)), squeeze=False)
    for row, stride in enumerate(ds.stride.values):
        s = ds.sel(stride=stride)
        for col, v in enumerate(("D", "G", "R")):
            ax = axes[row, col]
            for act in s.activation.values:
                y = s[v].sel(activation=act)
                ok = np.isfinite(y.values)
                line, = ax.plot(s.depth.values[ok], y.values[ok], "o", ms=4, label=f"{act} (simulation)")
                if f"{v}_pred" in s:
                    p = s[f"{v}_pred"].sel(activation=act)
                    okp = np.isfinite(p.values)
                    ax.plot(s.depth.values[okp], p.values[okp], "-", color=line.get_color(), lw=1, label=f"{act} (theory)")
            ax.set_yscale("log")
            if stride == 1:
                ax.set_xscale("log")
            ax.set_title(f"{QUANTITY_LABELS[v]}, stride {stride}")
            ax.set_xlabel("layer k")
        axes[row, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def theory_layer_figure(ds: xr.Dataset, stride: int, activation: str, k: int) -> Any:
    """One input of the constant-filter CNN and its layer-``k`` activations, clean vs noisy."""
    import matplotlib.pyplot as plt

    s = ds.sel(stride=stride, activation=activation)
    fig, axes = plt.subplots(2, 1, figsize=(7, 3.6))
    xin_c, xin_n = s.input_clean.values, s.input_noisy.values
    ok = np.isfinite(xin_c)
    axes[0].bar(np.arange(ok.sum()), xin_n[ok], color="tab:orange", alpha=0.6, label="noisy input")
    axes[0].bar(np.arange(ok.sum()), xin_c[ok], color="tab:blue", alpha=0.8, width=0.4, label="clean input (one-hot)")
    axes[0].set_title(f"input (stride {stride}, {activation})", fontsize=9)
    axes[0].legend(fontsize=7)
    c = s.clean_activation.sel(depth=k).values
    n = s.noisy_activation.sel(depth=k).values
    ok = np.isfinite(c)
    axes[1].bar(np.arange(ok.sum()), n[ok], color="tab:orange", alpha=0.6, label="noisy")
    axes[1].bar(np.arange(ok.sum()), c[ok], color="tab:blue", alpha=0.8, width=0.4, label="clean")
    axes[1].set_title(f"layer {k}: ||noisy − clean||² = {np.nansum((n - c) ** 2):.3g}", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_task_examples(ds: xr.Dataset) -> Any:
    """Probe inputs of a scale-detection task and their moved versions (stored by the notebook)."""
    import matplotlib.pyplot as plt

    keep = lambda d: d in ("example", "channel") or d.startswith("pixel")  # noqa: E731
    first = {d: 0 for d in ds.example_clean.dims if not keep(d)}  # a combined dataset: the first run's examples
    clean = ds.example_clean.isel(first).values
    moved = ds.example_moved.isel(first).values
    n = clean.shape[0]
    if clean.ndim == 4:  # 2D: [example, channel, H, W]
        fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.6))
        for i in range(n):
            ax = axes[i]
            ax.imshow(clean[i, 0] > 0, cmap="gray_r", interpolation="nearest")
            yy, xx = np.nonzero(moved[i, 0])
            ax.plot(xx, yy, "s", mfc="none", mec="tab:red", ms=7, mew=1.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title("black: input, red: moved", fontsize=7)
    else:  # 1D: [example, channel, N]
        fig, axes = plt.subplots(n, 1, figsize=(8, 1.1 * n), sharex=True)
        for i in range(n):
            axes[i].stem(np.arange(clean.shape[-1]), clean[i, 0], linefmt="C0-", markerfmt="C0o", basefmt=" ", label="input")
            axes[i].stem(np.arange(moved.shape[-1]) + 0.3, moved[i, 0], linefmt="C1-", markerfmt="C1s", basefmt=" ", label="sites moved")
            axes[i].set_yticks([])
        axes[0].legend(fontsize=7, ncol=2)
        axes[-1].set_xlabel("site")
    fig.tight_layout()
    return fig
