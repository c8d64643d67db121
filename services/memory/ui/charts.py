"""Loss curves as inline SVG, drawn on the server: no script, no charting library, nothing a fresh machine must
fetch, and the page shows the same chart with scripts off."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 720, 320
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 12, 36
# The run itself first, in the strongest colour; the parent next; then the baselines.
PALETTE = ("#d62728", "#1f77b4", "#7f7f7f", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class Scale:
    low: float
    high: float
    start: float  # pixel of ``low``
    end: float  # pixel of ``high``

    def __call__(self, value: float) -> float:
        span = (self.high - self.low) or 1.0
        return self.start + (value - self.low) / span * (self.end - self.start)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values spanning [low, high], about ``count`` of them."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def tick_label(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:.3g}"


def loss_chart(curves: Mapping[str, Sequence[tuple[float, float]]], title: str = "loss by tokens seen") -> str:
    """An SVG chart of each named curve of (tokens, loss) points; an empty string when no curve has a point."""
    drawn = {name: points for name, points in curves.items() if points}
    if not drawn:
        return ""
    xs = [x for points in drawn.values() for x, _ in points]
    ys = [y for points in drawn.values() for _, y in points]
    x = Scale(min(xs), max(xs), MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    y = Scale(min(ys), max(ys), HEIGHT - MARGIN_BOTTOM, MARGIN_TOP)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>", *_axes(x, y)]
    for index, (name, points) in enumerate(drawn.items()):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in points)
        width = 2.5 if index == 0 else 1.5
        parts.append(f'<polyline class="curve" data-name="{escape(name)}" fill="none" stroke="{colour}" '
                     f'stroke-width="{width}" points="{path}"><title>{escape(name)}</title></polyline>')
    parts.append("</svg>")
    return "".join(parts) + _legend(list(drawn))


def _axes(x: Scale, y: Scale) -> list[str]:
    parts = [f'<line class="axis" x1="{x.start}" y1="{y.start}" x2="{x.end}" y2="{y.start}"/>',
             f'<line class="axis" x1="{x.start}" y1="{y.start}" x2="{x.start}" y2="{y.end}"/>']
    for value in nice_ticks(x.low, x.high):
        px = x(value)
        parts.append(f'<text class="tick" x="{px:.1f}" y="{y.start + 16}" text-anchor="middle">'
                     f"{tick_label(value)}</text>")
    for value in nice_ticks(y.low, y.high):
        py = y(value)
        parts.append(f'<line class="grid" x1="{x.start}" y1="{py:.1f}" x2="{x.end}" y2="{py:.1f}"/>'
                     f'<text class="tick" x="{x.start - 6}" y="{py + 4:.1f}" text-anchor="end">'
                     f"{tick_label(value)}</text>")
    parts.append(f'<text class="axis-label" x="{(x.start + x.end) / 2}" y="{HEIGHT - 4}" '
                 f'text-anchor="middle">tokens</text>')
    return parts


def _legend(names: list[str]) -> str:
    items = "".join(f'<li><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
                    f"{escape(name)}</li>" for i, name in enumerate(names))
    return f'<ul class="legend">{items}</ul>'
