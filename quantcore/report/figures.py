"""Every view's chart, as a plotly figure: per-layer SQNR, weight histograms, accuracy and speed.

plotly is imported when a figure is made, not when this module is imported.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from quantcore.evaluate.scorecard import Scorecard
from quantcore.evaluate.speed import BATCH_SIZES
from quantcore.inspect.drift import DriftReport
from quantcore.inspect.weights import DEFAULT_BINS, WeightComparison, histogram
from quantcore.quantize.sweep import SweepReport
from quantcore.report.tables import percent

if TYPE_CHECKING:
    import plotly.graph_objects as go


# Worst-layer labels take turns around their marker, so two variants failing at one layer stay readable.
_LABEL_POSITIONS = ("bottom center", "top center", "bottom right", "top left", "bottom left", "top right")


def drift_figure(report: DriftReport) -> go.Figure:
    """Per-layer SQNR across depth, one line per variant, each variant's worst layer marked."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    figure = go.Figure()
    x = [f"{i + 1}. {label.split('. ', 1)[-1]}" for i, label in enumerate(report.layers)]
    palette = qualitative.Plotly
    for n, drift in enumerate(report.variants):
        color = palette[n % len(palette)]
        y = [db if db is not None and math.isfinite(db) else None for db in drift.sqnr_db]
        figure.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=str(drift.variant), line={"color": color}))
        worst = drift.worst
        if worst is not None and y[worst] is not None:
            figure.add_trace(go.Scatter(
                x=[x[worst]], y=[y[worst]], mode="markers+text", showlegend=False, name=f"{drift.variant} worst",
                text=[f"{drift.variant}: {y[worst]:.1f} dB"], textposition=_LABEL_POSITIONS[n % len(_LABEL_POSITIONS)],
                marker={"size": 16, "symbol": "x", "color": color},
            ))  # fmt: skip
    figure.update_layout(
        title=f"Per-layer SQNR against the float reference ({report.images} images)",
        xaxis_title="layer (input → output)",
        yaxis_title="SQNR (dB), higher is better",
        legend_title="variant",
        margin={"l": 60, "r": 20, "t": 60, "b": 120},
    )
    return figure


def weight_histogram_figure(
    comparison: WeightComparison,
    *,
    bins: int = DEFAULT_BINS,
    side_by_side: bool = False,
    raw_integers: bool = False,
) -> go.Figure:
    """Plotly histograms of one layer's weights: overlaid, or one panel per variant.

    Raises:
        ValueError: ``bins`` is out of range.
    """
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    hist = histogram(comparison, bins=bins, raw_integers=raw_integers)
    centres = (hist.edges[:-1] + hist.edges[1:]) / 2
    width = float(hist.edges[1] - hist.edges[0])
    labels = list(hist.counts)
    what = "stored integer" if raw_integers else "weight value"
    if side_by_side and labels:
        figure = make_subplots(rows=1, cols=len(labels), shared_yaxes=True, subplot_titles=labels)
    else:
        figure = go.Figure()
    palette = qualitative.Plotly
    for n, label in enumerate(labels):
        bar = go.Bar(
            x=centres, y=hist.counts[label], width=width, name=label, marker={"color": palette[n % len(palette)]},
            opacity=1.0 if side_by_side else 0.55,
        )  # fmt: skip
        if side_by_side:
            figure.add_trace(bar, row=1, col=n + 1)
        else:
            figure.add_trace(bar)
    figure.update_layout(
        title=f"{comparison.layer}: stored integers"
        if raw_integers
        else f"{comparison.layer}: weights (float; dequantized for quantized variants)",
        barmode="overlay",
        bargap=0,
        legend_title="variant",
        yaxis_title="count",
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
    )
    if not side_by_side:
        figure.update_xaxes(title_text=what)
    return figure


def scorecard_figure(card: Scorecard) -> go.Figure:
    """One bar chart: accuracy and agreement (%) per variant on the left, images/s at each batch size on the right."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [str(s.variant) for s in card.scores]
    figure = make_subplots(rows=1, cols=2, subplot_titles=(f"Accuracy on {card.images:,} images (%)",
                                                           "Speed (images/s, fastest run)"))  # fmt: skip
    figure.add_trace(go.Bar(x=names, y=[percent(s.accuracy) for s in card.scores], name="accuracy",
                            text=[f"{100 * s.accuracy:.1f}" if s.accuracy is not None else "" for s in card.scores],
                            textposition="outside"), row=1, col=1)  # fmt: skip
    figure.add_trace(go.Bar(x=names, y=[percent(s.agreement) for s in card.scores], name="agreement with float"),
                     row=1, col=1)  # fmt: skip
    for batch in BATCH_SIZES:
        figure.add_trace(go.Bar(x=names, y=[s.images_per_second.get(batch) for s in card.scores],
                                name=f"batch {batch}"), row=1, col=2)  # fmt: skip
    accuracies = [100 * s.accuracy for s in card.scores if s.accuracy is not None]
    low = max(0.0, min(accuracies, default=0.0) - 5)
    figure.update_yaxes(range=[low, 101], title_text="%", row=1, col=1)
    figure.update_yaxes(title_text="images/s", row=1, col=2)
    figure.update_layout(barmode="group", title=f"Accuracy and speed — {card.source}", legend_title="bars",
                         margin={"l": 60, "r": 20, "t": 80, "b": 80})  # fmt: skip
    return figure


def sweep_figure(report: SweepReport) -> go.Figure:
    """Per layer (costliest first): output SQNR with only it quantized, and with it kept in float."""
    import plotly.graph_objects as go

    layers = [row.layer for row in report.rows]

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    figure = go.Figure()
    figure.add_trace(go.Bar(x=layers, y=[finite(r.alone.output_sqnr_db) for r in report.rows],
                            name="only this layer quantized"))  # fmt: skip
    figure.add_trace(go.Bar(x=layers, y=[finite(r.kept_float.output_sqnr_db) for r in report.rows],
                            name="this layer kept in float"))  # fmt: skip
    figure.add_hline(y=report.base.output_sqnr_db, line_dash="dot", annotation_text="whole recipe")
    figure.update_layout(barmode="group", yaxis_title="output SQNR (dB)", xaxis_title="layer (costliest first)",
                         margin={"t": 30}, legend={"orientation": "h"})  # fmt: skip
    return figure
