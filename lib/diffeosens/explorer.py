"""Interactive explorers that work in a static HTML page (no kernel, no network) and in Jupyter.

A static book has no Python kernel, so the explorers switch between **precomputed** pictures in
the browser: an ipywidgets ``SelectionSlider`` (and ``Dropdown``) is ``jslink``-ed to a ``Stack``
of ``Image`` widgets. The widget state is saved in the executed notebook and rendered by the
ipywidgets HTML manager served from the book's own static folder (toolchain §4). No Python
callbacks (``interact``/``observe``) are used, so the same objects work offline.

:func:`live_perturbation_explorer` is the kernel-backed variant for a running Jupyter session: it
recomputes the deformation at any slider value.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

__all__ = [
    "fig_to_png",
    "grid_explorer",
    "live_perturbation_explorer",
    "perturbation_explorer",
    "perturbation_grid",
    "perturbation_figure",
    "precomputed_slider",
]


def fig_to_png(fig: Any, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _stack(pngs: Sequence[bytes]) -> Any:
    import ipywidgets as w

    return w.Stack([w.Image(value=p, format="png") for p in pngs], selected_index=0)


def _label(value: Any) -> str:
    """How a slider or dropdown shows a grid value (numbers compactly, e.g. ``0.5``, ``1``)."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def precomputed_slider(pngs: Mapping[Any, bytes], *, description: str = "", start: Any = None) -> Any:
    """A slider over the keys of ``pngs`` switching between the pictures, in pure JavaScript.

    >>> box = precomputed_slider({0.5: b"a", 1.0: b"b"}, description="delta")
    >>> type(box).__name__, len(box.children[1].children)
    ('VBox', 2)
    """
    import ipywidgets as w

    keys = list(pngs)
    labels = [_label(k) for k in keys]
    stack = _stack([pngs[k] for k in keys])
    slider = w.SelectionSlider(options=labels, value=labels[keys.index(start)] if start in keys else labels[0],
                               description=description, continuous_update=True, layout=w.Layout(width="420px"))
    stack.selected_index = labels.index(slider.value)
    w.jslink((slider, "index"), (stack, "selected_index"))
    return w.VBox([slider, stack])


def grid_explorer(pngs: Mapping[tuple[Any, Any], bytes], *, outer: str, inner: str, start: tuple[Any, Any] | None = None) -> Any:
    """A dropdown over the first key and a slider over the second, both linked in JavaScript.

    ``pngs`` maps ``(outer_value, inner_value)`` to a picture; every combination must exist.
    One ``Stack`` per outer value holds the pictures over the inner values; the dropdown selects
    the stack and the slider selects the picture inside every stack.
    """
    import ipywidgets as w

    outers = list(dict.fromkeys(k[0] for k in pngs))
    inners = list(dict.fromkeys(k[1] for k in pngs))
    stacks = [_stack([pngs[(o, i)] for i in inners]) for o in outers]
    outer_stack = w.Stack(stacks, selected_index=0)
    dropdown = w.Dropdown(options=[_label(o) for o in outers], description=outer)
    slider = w.SelectionSlider(options=[_label(i) for i in inners], description=inner, continuous_update=True,
                               layout=w.Layout(width="420px"))
    if start is not None:
        dropdown.value, slider.value = _label(start[0]), _label(start[1])
    outer_stack.selected_index = outers.index(next(o for o in outers if _label(o) == dropdown.value))
    for s in stacks:
        s.selected_index = [_label(i) for i in inners].index(slider.value)
        w.jslink((slider, "index"), (s, "selected_index"))
    w.jslink((dropdown, "index"), (outer_stack, "selected_index"))
    return w.VBox([w.HBox([dropdown, slider]), outer_stack])


# ------------------------------------------------------------------------------------------------
# Perturbation explorer
# ------------------------------------------------------------------------------------------------


def perturbation_grid(
    image: torch.Tensor,
    *,
    deltas: Sequence[float],
    cuts: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
    item: int = 0,
    interp: str = "linear",
) -> xr.Dataset:
    r"""Deformed and noisy versions of one (normalised) image on a grid of :math:`\delta` and cut.

    The draws are those of :func:`diffeosens.measure` for probe image number ``item`` with the
    same ``seed`` (first draw): the mode coefficients are item ``item`` of the seed's
    ``"diffeo"`` stream and the noise direction item ``item`` of its ``"noise"`` stream
    (:mod:`diffeosens.streams`). So at each cutoff one field grows along :math:`\delta`, and for
    :math:`(\delta, c)` the field shown is the one ``measure(..., delta=δ, cut=c, seed=seed)``
    applies to ``images[item]``. The noise is matched per image, :math:`\|\eta\| = \|\tau x - x\|`.
    Images are stored unnormalised (display range [0, 1]) when ``mean``/``std`` are given. With
    ``interp="gaussian"`` the clean reference (``original``, and the base of the noisy image) is
    the image passed through the Gaussian resampler at :math:`T = 0`, as in ``measure``.
    """
    from .diffeo import apply_fields, fields_from_coefficients, sample_coefficients, warp
    from .noise import rescale_to_norm
    from .streams import standard_normals, stream_id

    raw = image.to(torch.float64)[None]
    c, h, w = raw.shape[1:]
    x = apply_fields(raw, raw.new_zeros((1, 2, h, w)), interp="gaussian") if interp == "gaussian" else raw
    mean_t = torch.tensor(mean or [0.0] * c, dtype=torch.float64).view(1, -1, 1, 1)
    std_t = torch.tensor(std or [1.0] * c, dtype=torch.float64).view(1, -1, 1, 1)
    shape = (len(cuts), len(deltas))
    deformed = np.zeros(shape + (c, h, w))
    noisy = np.zeros(shape + (c, h, w))
    fields = np.zeros(shape + (2, h, w))
    norms = np.zeros(shape)
    xi = standard_normals(seed, stream_id("noise"), item, item + 1, (c, h, w))
    for a, cut in enumerate(cuts):
        drawn = sample_coefficients(1, (h, w), cut=cut, T=0.0, seed=seed, start=item, dtype=torch.float64)
        for b, delta in enumerate(deltas):
            coef = drawn.with_temperature(delta=delta, size=(h, w))
            tx = warp(raw, coef, interp=interp)
            nrm = torch.linalg.vector_norm((tx - x).flatten())
            nx = x + rescale_to_norm(xi, nrm.reshape(1))
            deformed[a, b] = (tx * std_t + mean_t)[0].numpy()
            noisy[a, b] = (nx * std_t + mean_t)[0].numpy()
            fields[a, b] = fields_from_coefficients(coef, (h, w))[0].numpy()
            norms[a, b] = float(nrm)
    dims = ("cut", "delta")
    return xr.Dataset(
        {
            "original": (("channel", "y", "x"), (x * std_t + mean_t)[0].numpy(), {"long_name": "clean image (display units)"}),
            "deformed": (dims + ("channel", "y", "x"), deformed, {"long_name": "deformed image tau x"}),
            "noisy": (dims + ("channel", "y", "x"), noisy, {"long_name": "image plus matched noise x + eta"}),
            "field": (dims + ("component", "y", "x"), fields, {"long_name": "displacement (dx, dy)", "units": "pixels"}),
            "perturbation_norm": (dims, norms, {"long_name": "|tau x - x| = |eta| (normalised units)"}),
        },
        coords={"cut": list(cuts), "delta": list(deltas), "component": ["dx", "dy"]},
        attrs={"schema": "diffeosens.perturbations/1", "seed": seed, "item": item, "interp": interp},
    )


def _show(ax: Any, img: np.ndarray, title: str) -> None:
    arr = np.clip(np.moveaxis(img, 0, -1), 0, 1)
    ax.imshow(arr.squeeze(), cmap="gray" if arr.shape[-1] == 1 else None, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def perturbation_figure(ds: xr.Dataset, cut: Any, delta: Any) -> Any:
    """Four panels: clean image, deformed, noisy (same norm), and the displacement field."""
    import matplotlib.pyplot as plt

    sel = ds.sel(cut=cut, delta=delta)
    fig, axes = plt.subplots(1, 4, figsize=(9.6, 2.6))
    _show(axes[0], ds.original.values, "clean x")
    _show(axes[1], sel.deformed.values, rf"deformed $\tau x$ ($\delta$={float(delta):g} px, c={cut})")
    _show(axes[2], sel.noisy.values, rf"noisy $x+\eta$, $\|\eta\|$={float(sel.perturbation_norm):.2f}")
    f = sel.field.values
    h, w = f.shape[1:]
    step = max(1, h // 16)
    yy, xx = np.mgrid[0:h:step, 0:w:step]
    mag = np.hypot(f[0], f[1])
    axes[3].imshow(mag, cmap="viridis", origin="upper")
    axes[3].quiver(xx, yy, f[0][::step, ::step], -f[1][::step, ::step], color="white", scale_units="xy", angles="xy", scale=1)
    axes[3].set_title(f"field |d| (max {mag.max():.2f} px)", fontsize=9)
    axes[3].axis("off")
    return fig


def perturbation_explorer(ds: xr.Dataset, *, dpi: int = 100, start: tuple[Any, Any] | None = None) -> Any:
    """The static explorer: a cut selector and a :math:`\\delta` slider over precomputed figures."""
    pngs = {(c, d): fig_to_png(perturbation_figure(ds, c, d), dpi=dpi) for c in ds.cut.values.tolist() for d in ds.delta.values.tolist()}
    return grid_explorer(pngs, outer="cut", inner="δ (px)", start=start)


def live_perturbation_explorer(image: torch.Tensor, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                               seed: int = 0) -> Any:  # pragma: no cover - needs a kernel
    """The same explorer computed live (needs a running Jupyter kernel)."""
    import ipywidgets as w
    from IPython.display import display

    out = w.Output()

    def draw(delta: float, cut: int) -> None:
        ds = perturbation_grid(image, deltas=[delta], cuts=[cut], mean=mean, std=std, seed=seed)
        with out:
            out.clear_output(wait=True)
            import matplotlib.pyplot as plt

            perturbation_figure(ds, cut, delta)
            plt.show()

    ui = w.interactive(draw, delta=w.FloatSlider(value=1.0, min=0.0, max=4.0, step=0.1, description="δ (px)"),
                       cut=w.Dropdown(options=[1, 2, 3, 5, 10, 15], value=3, description="cut"))
    display(w.VBox([ui, out]))
    return ui
