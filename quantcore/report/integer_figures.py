"""The integer view's charts: accumulator bits needed per layer against 16/24/32, and saturation per layer.

plotly is imported when a figure is made, not when this module is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantcore.integer.view import IntegerReport
from quantcore.report.integer_tables import ACCUMULATOR_WIDTHS
from quantcore.report.tables import percent

if TYPE_CHECKING:
    import plotly.graph_objects as go


def _layer_labels(report: IntegerReport) -> list[str]:
    """The layers of the first variant in graph order, numbered (variants of one model share them)."""
    seen: dict[str, None] = {}
    for result in report.variants:
        for layer in result.layers:
            seen.setdefault(layer.step.name, None)
    return list(seen)


def accumulator_figure(report: IntegerReport) -> go.Figure:
    """Bits the accumulator needs per layer: the worst-case bound (bars) and what the samples reached (markers)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    figure = go.Figure()
    palette = qualitative.Plotly
    for n, result in enumerate(report.variants):
        color = palette[n % len(palette)]
        names = [layer.step.name for layer in result.layers]
        bound = [layer.bound_bits for layer in result.layers]
        figure.add_trace(go.Bar(x=names, y=bound, name=f"{result.variant}: bound", marker={"color": color},
                                opacity=0.55, offsetgroup=str(n)))  # fmt: skip
        figure.add_trace(go.Scatter(x=names, y=[layer.observed_bits for layer in result.layers], mode="markers",
                                    name=f"{result.variant}: seen on {report.images} images",
                                    marker={"color": color, "symbol": "diamond", "size": 10}))  # fmt: skip
    for width in ACCUMULATOR_WIDTHS:
        figure.add_hline(y=width, line_dash="dot", annotation_text=f"int{width}", annotation_position="top left")
    figure.update_layout(
        title="Accumulator bits needed per layer (signed), against 16/24/32-bit accumulators",
        xaxis={"title": "layer (input → output)", "categoryorder": "array", "categoryarray": _layer_labels(report)},
        yaxis={"title": "bits", "range": [0, 34]},
        barmode="group",
        margin={"l": 60, "r": 20, "t": 60, "b": 140},
    )
    return figure


def saturation_figure(report: IntegerReport) -> go.Figure:
    """Outputs at the integer type's max, and at its min where that is not the zero point, per layer (%)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for result in report.variants:
        names = [layer.step.name for layer in result.layers]
        figure.add_trace(go.Bar(x=names, y=[percent(layer.saturation, 4) for layer in result.layers],
                                name=str(result.variant)))  # fmt: skip
    figure.update_layout(
        title=f"Saturated outputs per layer ({report.images} images); a fused ReLU's zeros are not counted",
        xaxis={"title": "layer (input → output)", "categoryorder": "array", "categoryarray": _layer_labels(report)},
        yaxis_title="% of outputs at the type's min or max",
        barmode="group",
        margin={"l": 60, "r": 20, "t": 60, "b": 140},
    )
    return figure
