"""Plotly figures for the web app: class counts, the freeze strip, live training curves, the confusion matrix.

Pure functions from plain data (lists, dicts, arrays) to `plotly.graph_objects.Figure`; no Streamlit here, so the
figures can be tested and reused anywhere. Figures stay light: long step series are thinned to a few hundred points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

FROZEN = "#8b909a"  # 3:1 on white (tests/test_accessibility.py), still plainly grey
TRAINED = "#e8553e"
HEAD = "#8e2c1e"
TRAIN_COLOUR = "#e8553e"
VAL_COLOUR = "#1f6fb2"
MAX_POINTS = 300

_LAYOUT = {
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "legend": {"orientation": "h", "yanchor": "top", "y": -0.28, "x": 0},
    "modebar": {"orientation": "v"},  # down the right edge: across the top it covered the titles
}
MIN_LOSS_SPAN = 0.2  # early in a run the loss moves in the fourth decimal; a span this wide shows that as flat


def loss_axis(values: Sequence[float]) -> dict:
    """The loss axis from zero (or the lowest loss) to a little above the highest, at least MIN_LOSS_SPAN wide."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return {"title": "loss"}
    low, high = max(0.0, min(finite) - 0.05 * (max(finite) - min(finite))), max(finite)
    if high - low < MIN_LOSS_SPAN:
        middle = (high + low) / 2
        low, high = max(0.0, middle - MIN_LOSS_SPAN / 2), max(0.0, middle - MIN_LOSS_SPAN / 2) + MIN_LOSS_SPAN
    return {"title": "loss", "range": [low, high + 0.05 * (high - low)]}


def downsample(points: Sequence[tuple[float, float]], max_points: int = MAX_POINTS) -> tuple[list, list]:
    """(xs, ys) with at most `max_points` points: consecutive points averaged in equal bins, the last kept exact."""
    if not points:
        return [], []
    xs = np.asarray([p[0] for p in points], dtype=float)
    ys = np.asarray([p[1] for p in points], dtype=float)
    if len(points) <= max_points:
        return xs.tolist(), ys.tolist()
    edges = np.linspace(0, len(points), max_points + 1).astype(int)
    bx = [float(xs[a:b].mean()) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    by = [float(ys[a:b].mean()) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    bx[-1], by[-1] = float(xs[-1]), float(ys[-1])
    return bx, by


def class_counts_figure(counts_by_split: dict[str, dict[str, int]]) -> go.Figure:
    """Stacked bars: images per class, one colour per split ('train', 'val', 'test')."""
    colours = {"train": TRAIN_COLOUR, "val": VAL_COLOUR, "test": "#6a9f3a"}
    names = {"train": "training", "val": "validation", "test": "test"}
    fig = go.Figure()
    for split, counts in counts_by_split.items():
        if not any(counts.values()):
            continue
        fig.add_bar(
            x=list(counts),
            y=list(counts.values()),
            name=names.get(split, split),
            marker_color=colours.get(split),
            hovertemplate="%{x}: %{y} images<extra>" + names.get(split, split) + "</extra>",
        )
    fig.update_layout(barmode="stack", title="Images per class", yaxis_title="images", height=340, **_LAYOUT)
    return fig


def freeze_strip(blocks: Sequence[tuple[str, int]], frozen: int, head_params: int) -> go.Figure:
    """The backbone as a strip of blocks, input on the left: frozen ones grey, trained ones coloured, then the head."""
    names = [name for name, _ in blocks] + ["new head"]
    params = [n for _, n in blocks] + [head_params]
    states = ["frozen" if i < frozen else "trains" for i in range(len(blocks))] + ["trains (always)"]
    colours = [FROZEN if i < frozen else TRAINED for i in range(len(blocks))] + [HEAD]
    fig = go.Figure(
        go.Bar(
            x=[1] * len(names),
            y=[""] * len(names),
            orientation="h",
            marker={"color": colours, "line": {"color": "white", "width": 2}},
            text=[str(i + 1) if i < len(blocks) else "head" for i in range(len(names))],
            textposition="inside",
            insidetextanchor="middle",
            customdata=list(zip(names, [f"{p:,}" for p in params], states, strict=True)),
            hovertemplate="%{customdata[0]}<br>%{customdata[1]} parameters<br>%{customdata[2]}<extra></extra>",
        )
    )
    fig.update_layout(
        barmode="stack",
        height=90,
        showlegend=False,
        margin={"l": 0, "r": 0, "t": 4, "b": 4},
        xaxis={"visible": False, "range": [0, len(names)], "fixedrange": True},
        yaxis={"visible": False, "fixedrange": True},
    )
    return fig


def _step_axis(total_steps: int | None) -> dict:
    """A fixed x axis over the whole training while it runs, so the curve grows left to right instead of rescaling."""
    axis: dict = {"title": "training step"}
    if total_steps:
        axis["range"] = [0, total_steps * 1.02]
    return axis


def loss_figure(
    step_losses: Sequence[tuple[int, float]],
    history: Sequence[dict],
    steps_per_epoch: float,
    total_steps: int | None = None,
) -> go.Figure:
    """Loss per training step (thinned), and the epoch means of training and validation loss at each epoch's end."""
    fig = go.Figure()
    xs, ys = downsample(step_losses)
    fig.add_scatter(x=xs, y=ys, mode="lines", name="training loss (per step)", line={"color": TRAIN_COLOUR, "width": 1})
    epoch_x = [h["epoch"] * steps_per_epoch for h in history]
    if history:
        fig.add_scatter(
            x=epoch_x,
            y=[h["train_loss"] for h in history],
            mode="markers",
            name="training loss (epoch mean)",
            marker={"color": TRAIN_COLOUR, "size": 8},
        )
        fig.add_scatter(
            x=epoch_x,
            y=[h["val_loss"] for h in history],
            mode="lines+markers",
            name="validation loss",
            line={"color": VAL_COLOUR},
        )
    shown = list(ys) + [h["train_loss"] for h in history] + [h["val_loss"] for h in history]
    fig.update_layout(
        title="Loss (lower is better)", xaxis=_step_axis(total_steps), yaxis=loss_axis(shown), height=340, **_LAYOUT
    )
    return fig


def accuracy_figure(history: Sequence[dict], epochs: int | None = None) -> go.Figure:
    """Training and validation accuracy after each epoch, in percent (x axis over all `epochs` when given)."""
    epochs_seen = [h["epoch"] for h in history]
    fig = go.Figure()
    fig.add_scatter(
        x=epochs_seen,
        y=[100 * h["train_accuracy"] for h in history],
        mode="lines+markers",
        name="training",
        line={"color": TRAIN_COLOUR},
        marker={"size": 8},
    )
    fig.add_scatter(
        x=epochs_seen,
        y=[100 * h["val_accuracy"] for h in history],
        mode="lines+markers",
        name="validation",
        line={"color": VAL_COLOUR},
        marker={"size": 8},
    )
    last = max([epochs or 0] + epochs_seen) if (epochs or epochs_seen) else 1
    fig.update_layout(
        title="Accuracy (higher is better)",
        yaxis={"title": "%", "range": [0, 101]},
        xaxis={"title": "epoch", "range": [0.5, last + 0.5], "dtick": 1 if last <= 20 else None},
        height=340,
        **_LAYOUT,
    )
    return fig


def lr_figure(schedule: Sequence[float], steps_done: int = 0) -> go.Figure:
    """The whole planned learning rate (warmup, then cosine decay), the part already trained drawn solid.

    `steps_done` should move once per epoch: between epochs the figure is identical, so the browser need not redraw it.
    """
    xs, ys = downsample(list(enumerate(schedule, start=1)))
    done = [(x, y) for x, y in zip(xs, ys, strict=True) if x <= steps_done]
    fig = go.Figure(
        [
            go.Scatter(x=xs, y=ys, mode="lines", name="planned", line={"color": "#c9bce8", "dash": "dot"}),
            go.Scatter(
                x=[x for x, _ in done], y=[y for _, y in done], mode="lines", name="done", line={"color": "#7a5cc2"}
            ),
        ]
    )
    total_steps = len(schedule) or None
    top = max(ys, default=0) * 1.1 or 1e-3
    fig.update_layout(
        title="Learning rate",
        xaxis=_step_axis(total_steps),
        yaxis={"exponentformat": "e", "range": [0, top]},
        height=340,
        **_LAYOUT,
    )
    return fig


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str]) -> go.Figure:
    """Rows: the true class; columns: what the model said. The diagonal holds the right answers."""
    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, totals, out=np.zeros_like(confusion, dtype=float), where=totals > 0)
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=list(class_names),
            y=list(class_names),
            text=confusion,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            showscale=False,
            hovertemplate="true %{y}, predicted %{x}: %{text} images<extra></extra>",
        )
    )
    size = max(320, 40 * len(class_names) + 120)
    fig.update_layout(
        title="Confusion matrix",
        xaxis={"title": "predicted class", "side": "bottom"},
        yaxis={"title": "true class", "autorange": "reversed"},
        height=size,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def top_k_figure(top_k: Sequence[dict]) -> go.Figure:
    """Horizontal bars: the model's confidence for its best few labels."""
    labels = [t["label"] for t in top_k][::-1]
    values = [100 * t["confidence"] for t in top_k][::-1]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker_color=VAL_COLOUR,
            name="confidence (%)",
            text=[f"{v:.1f}%" for v in values],
            textposition="auto",
        )
    )
    fig.update_layout(
        height=40 + 30 * len(labels),
        xaxis={"range": [0, 100], "visible": False},
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        showlegend=False,
    )
    return fig


def reliability_figure(bins_before: Sequence[dict], bins_after: Sequence[dict]) -> go.Figure:
    """Reliability diagram: per confidence group, how often the model was right, before and after calibration.
    On the diagonal, a model is exactly as sure as it is right."""
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": FROZEN}, name="as sure as right")
    for bins, name, colour in ((bins_before, "before", TRAIN_COLOUR), (bins_after, "after calibration", VAL_COLOUR)):
        used = [b for b in bins if b["count"]]
        fig.add_scatter(
            x=[b["confidence"] for b in used],
            y=[b["accuracy"] for b in used],
            mode="lines+markers",
            marker={"size": [6 + min(14, b["count"] ** 0.5 * 2) for b in used], "color": colour},
            name=name,
            customdata=[b["count"] for b in used],
            hovertemplate="sure %{x:.0%} · right %{y:.0%} · %{customdata} pictures<extra>" + name + "</extra>",
        )
    fig.update_layout(
        title="How sure against how often right",
        xaxis={"title": "confidence", "tickformat": ".0%", "range": [0, 1.02]},
        yaxis={"title": "share right", "tickformat": ".0%", "range": [0, 1.02]},
        height=360,
        **_LAYOUT,
    )
    return fig


def threshold_figure(table: Sequence[dict], threshold: float, positive: str) -> go.Figure:
    """Two classes: share of `positive` found and share of alarms that are right, against the threshold."""
    return _against_threshold(
        table,
        threshold,
        (("recall", f"{positive} found (recall)"), ("precision", "alarms that are right (precision)")),
        title=f"Say {positive} from this probability on",
        x_title=f"threshold on the probability of {positive}",
    )


def not_sure_figure(table: Sequence[dict], threshold: float) -> go.Figure:
    """Several classes: share answered and accuracy of those answers, against the confidence threshold."""
    return _against_threshold(
        table,
        threshold,
        (("answered", "pictures answered"), ("accuracy", "accuracy of the answers")),
        title="Answer only when at least this sure",
        x_title="confidence threshold",
    )


def _against_threshold(
    table: Sequence[dict], threshold: float, curves: Sequence[tuple[str, str]], title: str, x_title: str
) -> go.Figure:
    """Two shares (table columns, with their names) against the threshold of each row, the line drawn at
    `threshold`."""
    xs = [row["threshold"] for row in table]
    fig = go.Figure()
    for (column, name), colour in zip(curves, (TRAINED, VAL_COLOUR), strict=True):
        fig.add_scatter(x=xs, y=[row[column] for row in table], name=name, line={"color": colour})
    fig.add_vline(x=threshold, line={"dash": "dash", "color": HEAD})
    fig.update_layout(
        title=title,
        xaxis={"title": x_title, "range": [0, 1]},
        yaxis={"tickformat": ".0%", "range": [0, 1.02]},
        height=340,
        **_LAYOUT,
    )
    return fig


def efficiency_figure(pretrained: Sequence[dict], scratch: Sequence[dict]) -> go.Figure:
    """Validation accuracy against the share of training pictures, pretrained and from random weights."""
    fig = go.Figure()
    for points, name, colour in ((pretrained, "pretrained", VAL_COLOUR), (scratch, "from scratch", TRAIN_COLOUR)):
        points = sorted(points, key=lambda p: p["share"])
        fig.add_scatter(
            x=[p["share"] for p in points],
            y=[p["accuracy"] for p in points],
            customdata=[p["num_train"] for p in points],
            mode="lines+markers",
            name=name,
            line={"color": colour},
            hovertemplate="%{x:.0%} of the pictures (%{customdata}) · %{y:.1%}<extra>" + name + "</extra>",
        )
    fig.update_layout(
        title="Accuracy against the pictures used",
        xaxis={"title": "share of the training pictures", "tickformat": ".0%", "range": [0, 1.05]},
        yaxis={"title": "validation accuracy", "tickformat": ".0%", "range": [0, 1.02]},
        height=360,
        **_LAYOUT,
    )
    return fig


def compare_curves_figure(curves: dict[str, Sequence[dict]]) -> go.Figure:
    """Validation accuracy per epoch of several runs, one line each (name -> epoch events)."""
    fig = go.Figure()
    for name, history in curves.items():
        fig.add_scatter(
            x=[h["epoch"] for h in history], y=[h["val_accuracy"] for h in history], mode="lines+markers", name=name
        )
    fig.update_layout(
        title="Validation accuracy by epoch",
        xaxis={"title": "epoch", "dtick": 1},
        yaxis={"tickformat": ".0%", "range": [0, 1.02]},
        height=360,
        **_LAYOUT,
    )
    return fig


def probe_figure(tried: Sequence[dict], chosen: float) -> go.Figure:
    """The fitted head's cross-validation: held-out accuracy for each regularisation strength tried, the chosen one
    marked (a head fitted in one go has no steps to draw; this is what its fitting weighed)."""
    ordered = sorted(tried, key=lambda t: t["penalty"])
    fig = go.Figure()
    fig.add_scatter(
        x=[t["penalty"] for t in ordered],
        y=[100 * t["cv_accuracy"] for t in ordered],
        mode="lines+markers",
        name="held-out accuracy",
        line={"color": VAL_COLOUR},
    )
    pick = next((t for t in ordered if t["penalty"] == chosen), None)
    if pick:
        fig.add_scatter(
            x=[chosen],
            y=[100 * pick["cv_accuracy"]],
            mode="markers",
            name="chosen",
            marker={"color": TRAINED, "size": 14, "symbol": "star"},
        )
    fig.update_layout(
        title="Fitting the head: strengths tried",
        xaxis={"title": "regularisation strength (stronger to the right)", "type": "log"},
        yaxis={"title": "% right on held-out training pictures", "range": [0, 101]},
        height=340,
        **_LAYOUT,
    )
    return fig


def describe(fig: go.Figure) -> str:
    """The figure's numbers in a sentence, for people who cannot see the chart (screen readers, printouts): per
    line or bar series its name, how many points, and where it starts, ends and peaks."""
    parts = []
    for trace in fig.data:
        if trace.type == "bar" and trace.orientation == "h":  # labels down the side, values along
            pairs = [f"{y} {_number(x)}" for x, y in zip(trace.x, trace.y, strict=True)][::-1]
            parts.append(f"{trace.name or 'values'}: " + ", ".join(pairs))
            continue
        ys = [y for y in (trace.y if trace.y is not None else []) if isinstance(y, int | float) and np.isfinite(y)]
        if trace.type == "heatmap" or not ys or not trace.name:
            continue
        if trace.type == "bar" and trace.x is not None and len(trace.x) == len(ys):
            pairs = [f"{x} {_number(y)}" for x, y in zip(trace.x, ys, strict=True)]
            parts.append(f"{trace.name}: " + ", ".join(pairs[:12]) + (", ..." if len(pairs) > 12 else ""))
        elif len(ys) == 1:
            parts.append(f"{trace.name}: {_number(ys[0])}")
        else:
            parts.append(
                f"{trace.name}: {len(ys)} points from {_number(ys[0])} to {_number(ys[-1])} "
                f"(lowest {_number(min(ys))}, highest {_number(max(ys))})"
            )
    title = f"{fig.layout.title.text}. " if fig.layout.title and fig.layout.title.text else ""
    return title + ("; ".join(parts) + "." if parts else "No numbers yet.")


def _number(value: float) -> str:
    return f"{value:.3g}"
