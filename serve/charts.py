"""Server-rendered SVG charts for the case page, the batch report and the supervisor view.

Every chart is a pure function from numbers to one ``<svg>`` element (as :class:`markupsafe.Markup`):

- readable without JavaScript, printable, and styled by CSS classes (``serve/static/triage.css``,
  which the self-contained batch report inlines), so a colour is defined once;
- accessible: ``role="img"`` with a ``<title>`` and a ``<desc>`` that says in words what the chart
  shows (the text alternative);
- testable: each drawn element carries the number it draws as a ``data-*`` attribute, so tests
  compare the drawing with the data, not pixels.

Geometry (sizes in SVG user units) is local to each function; nothing is read from files here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache

from markupsafe import Markup, escape

# Shared frame: charts scale to their container's width (viewBox), text stays readable at ~600 px.
ROW_PX = 18
AXIS_PX = 22
LABEL_PX = 150
WIDTH = 560
CHANNEL_ORDER = ("red", "yellow", "green")
RESULT_ORDER = ("confirmed", "clean", "not_inspected", "none")


@dataclass(frozen=True)
class Band:
    """A price range drawn as a bar on the price axis (``kind``: ``declared`` or ``good``)."""

    name: str
    low: float
    high: float
    kind: str = "good"


@dataclass(frozen=True)
class Stop:
    """A place on a route (``role``: origin, export, loading, transshipment or discharge)."""

    label: str
    role: str
    country: str
    hub: bool = False


@dataclass(frozen=True)
class TimelinePoint:
    """An earlier line of a party: when, how the model rated it, and what inspection found."""

    day: date
    risk: float
    channel: str
    result: str  # one of RESULT_ORDER ("none": no outcome recorded)
    label: str
    href: str | None = None


@dataclass(frozen=True)
class Rate:
    """Hits out of trials in one period; the interval is Wilson's (95 %)."""

    period: str
    hits: int
    trials: int

    @property
    def value(self) -> float | None:
        """Observed rate, or None with no trials."""
        return self.hits / self.trials if self.trials else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """Wilson score interval (z = 1.96), or None with no trials."""
        return wilson_interval(self.hits, self.trials)


def wilson_interval(hits: int, trials: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion; None when there are no trials.

    Chosen over the normal approximation because weekly inspection counts are small and hit rates
    near 0 or 1, where the normal interval leaves [0, 1] or collapses to a point.
    """
    if trials <= 0:
        return None
    p = hits / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    # The interval always holds p; rounding can put a bound a hair past it (0 hits of 11 gave a
    # lower bound of 2.8e-17), so the bounds are clamped to p as well as to [0, 1].
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


# --- primitives ----------------------------------------------------------------------------------


def _num(value: float) -> str:
    """A coordinate with two decimals at most (keeps the markup short and stable)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


@cache
def _attribute_name(key: str) -> str:
    """``data_value`` -> ``data-value``; a trailing underscore (``class_``) is dropped."""
    return key.rstrip("_").replace("_", "-")


def _attrs(**values: object) -> str:
    """Attributes in keyword order; ``data_x`` is written ``data-x``; None is left out; text is escaped."""
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, float):
            text = _num(value)
        elif isinstance(value, int):
            text = str(value)
        else:
            text = html.escape(str(value), quote=True)
        parts.append(f'{_attribute_name(key)}="{text}"')
    return " ".join(parts)


def _tag(name: str, body: str = "", **values: object) -> str:
    attrs = _attrs(**values)
    opening = f"<{name} {attrs}" if attrs else f"<{name}"
    return f"{opening}>{body}</{name}>" if body else f"{opening}/>"


def _title(content: object) -> str:
    """A tooltip (SVG ``<title>``); its text is escaped like every other text of a chart."""
    return f"<title>{escape(content)}</title>"


def _text(x: float, y: float, content: object, class_: str = "", anchor: str = "start", **data: object) -> str:
    return _tag(
        "text",
        str(escape(content)),
        x=float(x),
        y=float(y),
        class_=class_ or None,
        text_anchor=anchor if anchor != "start" else None,
        **data,
    )


def _svg(
    kind: str, chart_id: str, width: float, height: float, title: str, description: str, body: Sequence[str], **data: object
) -> Markup:
    """The ``<svg>`` element with its text alternative; ``chart_id`` keeps ids unique on a page."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" {_attrs(class_="chart", id=chart_id, data_chart=kind, **data)} '
        f'viewBox="0 0 {_num(width)} {_num(height)}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" preserveAspectRatio="xMinYMin meet">'
    )
    alternative = f'<title id="{chart_id}-title">{escape(title)}</title><desc id="{chart_id}-desc">{escape(description)}</desc>'
    return Markup(head + alternative + "".join(body) + "</svg>")


@dataclass(frozen=True)
class LinearScale:
    """Maps [low, high] to [start, end] pixels."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.high - self.low
        share = (value - self.low) / span if span else 0.5
        return self.start + share * (self.end - self.start)


@dataclass(frozen=True)
class LogScale:
    """Maps [low, high] (both > 0) to [start, end] pixels on a log10 axis."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        return LinearScale(math.log10(self.low), math.log10(self.high), self.start, self.end)(math.log10(value))


def log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks of each decade within [low, high] (decades only when there are many)."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1.0,) if last - first > 4 else (1.0, 2.0, 5.0)
    ticks = [step * 10.0**decade for decade in range(first, last + 1) for step in steps]
    return [t for t in ticks if low <= t <= high]


def nice_step(span: float, count: int = 5) -> float:
    """A 1-2-5 step that cuts ``span`` into about ``count`` intervals."""
    if span <= 0:
        return 1.0
    raw = span / count
    power = 10.0 ** math.floor(math.log10(raw))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= raw)


def _tick_label(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _linear_ticks(high: float) -> list[float]:
    step = nice_step(high)
    return [i * step for i in range(int(high // step) + 1)]


# --- case page -----------------------------------------------------------------------------------


def price_chart(value_per_kg: float, bands: Sequence[Band], chart_id: str = "price") -> Markup:
    """The declared value per kg against the declared code's typical band and the controlled goods' bands.

    One row per band on a shared log price axis (prices of cover goods and controlled goods differ
    by orders of magnitude); the declared value is a vertical line through all rows, so a value that
    sits in antimony's band and far above its declared code's is seen at once.
    """
    values = [b.low for b in bands] + [b.high for b in bands] + ([value_per_kg] if value_per_kg > 0 else [])
    low, high = (min(values) / 2, max(values) * 2) if values else (0.1, 10.0)
    top, left = 8, LABEL_PX
    height = top + ROW_PX * max(1, len(bands)) + AXIS_PX + 16
    x = LogScale(low, high, left, WIDTH - 24)
    body = []
    for i, band in enumerate(bands):
        y = top + i * ROW_PX
        body.append(_text(left - 6, y + 12.5, band.name, "label", anchor="end"))
        body.append(
            _tag(
                "rect",
                _title(f"{band.name}: {band.low:g}-{band.high:g} USD/kg"),
                class_=f"band {band.kind}",
                x=x(band.low),
                y=float(y + 3),
                width=max(2.0, x(band.high) - x(band.low)),
                height=float(ROW_PX - 6),
                data_name=band.name,
                data_low=f"{band.low:g}",
                data_high=f"{band.high:g}",
            )
        )
    axis_y = top + ROW_PX * max(1, len(bands)) + 2
    body.append(_tag("line", class_="axis", x1=float(left), x2=float(WIDTH - 24), y1=float(axis_y), y2=float(axis_y)))
    for tick in log_ticks(low, high):
        body.append(_tag("line", class_="tick", x1=x(tick), x2=x(tick), y1=float(axis_y), y2=float(axis_y + 4)))
        body.append(_text(x(tick), axis_y + 15, _tick_label(tick), "tick-label", anchor="middle"))
    body.append(_text(WIDTH - 24, axis_y + 28, "USD/kg, log scale", "tick-label", anchor="end"))
    inside = [b.name for b in bands if b.low <= value_per_kg <= b.high]
    if value_per_kg > 0:
        vx = x(value_per_kg)
        body.append(
            _tag(
                "line",
                _title(f"declared {value_per_kg:,.2f} USD/kg"),
                class_="declared-value",
                x1=vx,
                x2=vx,
                y1=float(top - 4),
                y2=float(axis_y),
                data_value=f"{value_per_kg:.6g}",
            )
        )
    description = (
        (f"Declared {value_per_kg:,.2f} USD/kg. " if value_per_kg > 0 else "No declared value per kg. ")
        + " ".join(f"{b.name}: {b.low:g}-{b.high:g} USD/kg." for b in bands)
        + (
            f" The declared value lies within: {', '.join(inside)}."
            if inside
            else " The declared value lies within none of these bands."
        )
    )
    return _svg(
        "price",
        chart_id,
        WIDTH,
        height,
        "Declared value per kg against price bands",
        description,
        body,
        data_value_per_kg=f"{value_per_kg:.6g}",
    )


def route_diagram(stops: Sequence[Stop], chart_id: str = "route") -> Markup:
    """The route as a row of places joined by arrows; diversion hubs drawn as marked (filled, "hub")."""
    count = max(1, len(stops))
    gap = (WIDTH - 40) / max(1, count - 1) if count > 1 else 0
    height, y = 64, 24
    body = [
        _tag(
            "defs",
            _tag(
                "marker",
                _tag("path", d="M0,0 L8,4 L0,8 z", class_="arrow-head"),
                id=f"{chart_id}-arrow",
                viewBox="0 0 8 8",
                refX=8,
                refY=4,
                markerWidth=7,
                markerHeight=7,
                orient="auto",
            ),
        )
    ]
    xs = [20 + i * gap if count > 1 else WIDTH / 2 for i in range(len(stops))]
    for i in range(len(stops) - 1):
        body.append(
            _tag(
                "line",
                class_="leg",
                x1=xs[i] + 9,
                x2=xs[i + 1] - 11,
                y1=float(y),
                y2=float(y),
                marker_end=f"url(#{chart_id}-arrow)",
            )
        )
    for x, stop in zip(xs, stops):
        anchor = "start" if x == xs[0] and count > 1 else "end" if x == xs[-1] and count > 1 else "middle"
        body.append(
            _tag(
                "g",
                _tag("circle", cx=x, cy=float(y), r=7.0, class_=f"stop {'hub' if stop.hub else ''}".strip())
                + _text(x, y - 12, stop.label, "stop-label", anchor=anchor)
                + _text(x, y + 22, stop.role + (" · hub" if stop.hub else ""), "stop-role", anchor=anchor),
                class_="route-stop",
                data_label=stop.label,
                data_role=stop.role,
                data_country=stop.country,
                data_hub="true" if stop.hub else "false",
            )
        )
    words = " → ".join(f"{s.label} ({s.role}{', diversion hub' if s.hub else ''})" for s in stops)
    hubs = sum(s.hub for s in stops)
    return _svg(
        "route",
        chart_id,
        WIDTH,
        height,
        "Route of the consignment",
        f"{words}. {hubs} diversion hub{'s' if hubs != 1 else ''} on the route.",
        body,
    )


def _timeline_mark(point: TimelinePoint, px: float, py: float) -> str:
    """One earlier line's mark, written in one format (a case page draws up to 200 of them)."""
    label, day = html.escape(point.label, quote=True), point.day.isoformat()
    outcome = point.result.replace("_", " ") if point.result != "none" else "no outcome"
    tip = f"<title>{label} · {day} · {point.channel} · risk {point.risk:.2f} · {outcome}</title>"
    classes = f"mark ch-{point.channel} result-{point.result}"
    if point.result == "confirmed":
        shape = f'<path d="M{_num(px)},{_num(py - 6)} l6,6 l-6,6 l-6,-6 z" class="{classes}">{tip}</path>'
    else:
        radius = "4.5" if point.result in ("clean", "not_inspected") else "2.5"
        shape = f'<circle cx="{_num(px)}" cy="{_num(py)}" r="{radius}" class="{classes}">{tip}</circle>'
    mark = (
        f'<g class="point" data-day="{day}" data-risk="{point.risk:.4f}" data-channel="{point.channel}" '
        f'data-result="{point.result}" data-label="{label}">{shape}</g>'
    )
    return f'<a href="{html.escape(point.href, quote=True)}">{mark}</a>' if point.href else mark


def timeline(points: Sequence[TimelinePoint], chart_id: str = "timeline", party: str = "") -> Markup:
    """A party's earlier lines over time: height is the risk score, colour the channel, the mark the outcome.

    Confirmed misdeclarations are drawn as a diamond, clean inspections as a ring, lines without an
    outcome as a small dot, so that a party with a confirmed past stands out without reading the table.
    """
    left, top, bottom = 34, 10, 26
    height = 120
    if points:
        first, last = min(p.day for p in points), max(p.day for p in points)
    else:
        first = last = date.today()
    span = (last - first).days
    pad = max(1, span // 30) if span else 7  # lines of one day sit mid-axis, not on the y axis
    x = LinearScale(-pad, span + pad, left + 8, WIDTH - 12)
    y = LinearScale(0.0, 1.0, height - bottom, top)
    body = [
        _tag("line", class_="axis", x1=float(left), x2=float(WIDTH - 8), y1=y(0.0), y2=y(0.0)),
        _tag("line", class_="axis", x1=float(left), x2=float(left), y1=y(0.0), y2=y(1.0)),
    ]
    for level in (0.0, 0.5, 1.0):
        body.append(_text(left - 4, y(level) + 4, f"{level:g}", "tick-label", anchor="end"))
    body.append(_text(left - 4, top - 1, "risk", "tick-label", anchor="end"))
    if points:
        body.append(_text(x(0), height - 6, first.isoformat(), "tick-label", anchor="middle" if not span else "start"))
        if span:
            body.append(_text(x(span), height - 6, last.isoformat(), "tick-label", anchor="end"))
    for point in sorted(points, key=lambda p: (p.day, p.label)):
        px, py = x((point.day - first).days), y(min(1.0, max(0.0, point.risk)))
        body.append(_timeline_mark(point, px, py))
    counts = {r: sum(p.result == r for p in points) for r in RESULT_ORDER}
    description = (
        f"{len(points)} earlier line{'s' if len(points) != 1 else ''} of {party or 'the party'}"
        + (f" from {first.isoformat()} to {last.isoformat()}" if points else "")
        + f": {counts['confirmed']} confirmed misdeclared, {counts['clean']} clean, "
        f"{counts['not_inspected']} not inspected, {counts['none']} without outcome."
    )
    return _svg(
        "timeline",
        chart_id,
        WIDTH,
        height,
        f"Earlier lines of {party or 'the party'}",
        description,
        body,
        data_points=len(points),
    )


# --- batch report and supervisor view ------------------------------------------------------------


def hbar_chart(
    labels: Sequence[str], values: Sequence[float], chart_id: str, title: str, unit: str = "lines", class_: str = "bar"
) -> Markup:
    """Horizontal bars, one per label, longest first as given; the value is written at each bar's end."""
    top = 4
    label_px = 250
    height = top + ROW_PX * max(1, len(labels)) + 4
    peak = max(values, default=0) or 1
    x = LinearScale(0, peak, label_px, WIDTH - 50)
    body = []
    for i, (label, value) in enumerate(zip(labels, values)):
        body += _bar_row(
            i,
            top,
            label_px,
            x,
            _clip(label, 40),
            value,
            f"{value:,g}",
            f"{label}: {value:,g} {unit}",
            class_,
            data_label=label,
            data_value=f"{value:g}",
        )
    description = "; ".join(f"{label}: {value:,g} {unit}" for label, value in zip(labels, values)) or "Nothing to show."
    return _svg("hbar", chart_id, WIDTH, height, title, description, body)


def _bar_row(
    i: int,
    top: float,
    label_px: float,
    x: LinearScale,
    label: str,
    value: float,
    shown: str,
    tip: str,
    class_: str,
    **data: object,
) -> list[str]:
    """Row ``i`` of a horizontal bar chart: the label, the bar (from ``label_px`` to ``x(value)``), the value."""
    y = top + i * ROW_PX
    bar = _tag(
        "rect",
        _title(tip),
        class_=class_,
        x=float(label_px),
        y=float(y + 3),
        width=max(1.0, x(value) - label_px),
        height=float(ROW_PX - 6),
        **data,
    )
    return [_text(label_px - 6, y + 12.5, label, "label", anchor="end"), bar, _text(x(value) + 4, y + 12.5, shown, "value")]


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def stacked_columns(
    categories: Sequence[str], stacks: dict[str, Sequence[int]], chart_id: str, title: str, unit: str = "lines"
) -> Markup:
    """Vertical columns per category, stacked by series (e.g. red over yellow flagged lines per day)."""
    left, top, bottom = 40, 8, 34
    height = 170
    totals = [sum(stacks[s][i] for s in stacks) for i in range(len(categories))]
    peak = max(totals, default=0) or 1
    y = LinearScale(0, peak, height - bottom, top)
    step = (WIDTH - left - 8) / max(1, len(categories))
    width = max(2.0, min(28.0, step * 0.7))
    body = [_tag("line", class_="axis", x1=float(left), x2=float(WIDTH - 4), y1=y(0), y2=y(0))]
    for tick in _linear_ticks(peak):
        body.append(_text(left - 4, y(tick) + 4, _tick_label(tick), "tick-label", anchor="end"))
        body.append(_tag("line", class_="grid", x1=float(left), x2=float(WIDTH - 4), y1=y(tick), y2=y(tick)))
    label_every = max(1, math.ceil(len(categories) / 8))
    for i, category in enumerate(categories):
        cx = left + step * (i + 0.5)
        base = 0
        for series, counts in stacks.items():
            count = counts[i]
            if count:
                body.append(
                    _tag(
                        "rect",
                        _title(f"{category} {series}: {count:,} {unit}"),
                        class_=f"ch-{series}",
                        x=cx - width / 2,
                        y=y(base + count),
                        width=width,
                        height=y(base) - y(base + count),
                        data_category=category,
                        data_series=series,
                        data_value=count,
                    )
                )
            base += count
        if i % label_every == 0:
            body.append(_text(cx, height - bottom + 14, category, "tick-label", anchor="middle"))
    description = (
        "; ".join(f"{category}: " + ", ".join(f"{stacks[s][i]:,} {s}" for s in stacks) for i, category in enumerate(categories))
        or "Nothing to show."
    )
    return _svg("columns", chart_id, WIDTH, height, title, description, body)


def histogram_compare(
    edges: Sequence[float],
    shares: Sequence[float],
    reference: Sequence[float] | None,
    chart_id: str,
    title: str,
    labels: Sequence[str] | None = None,
) -> Markup:
    """Shares per bin of this batch (bars) against a reference (outlined steps), bins of equal width.

    Bins are drawn equally wide whatever their edges (risk bins are finer near 0, where most lines
    are); the edges are written under the axis.
    """
    left, top, bottom = 40, 8, 30
    height = 170
    count = len(shares)
    peak = max(list(shares) + list(reference or []), default=0) or 1
    y = LinearScale(0, peak, height - bottom, top)
    step = (WIDTH - left - 8) / max(1, count)
    body = [_tag("line", class_="axis", x1=float(left), x2=float(WIDTH - 4), y1=y(0), y2=y(0))]
    for tick in _linear_ticks(peak):
        body.append(_text(left - 4, y(tick) + 4, f"{tick:.0%}", "tick-label", anchor="end"))
    names = labels or [f"{edges[i]:g}-{edges[i + 1]:g}" for i in range(count)]
    for i in range(count):
        x0 = left + i * step
        body.append(
            _tag(
                "rect",
                _title(f"risk {names[i]}: {shares[i]:.1%} of this batch"),
                class_="bar",
                x=x0 + 1,
                y=y(shares[i]),
                width=step - 2,
                height=y(0) - y(shares[i]),
                data_bin=names[i],
                data_share=f"{shares[i]:.6f}",
            )
        )
        if reference is not None:
            body.append(
                _tag(
                    "line",
                    _title(f"risk {names[i]}: {reference[i]:.1%} in validation"),
                    class_="reference",
                    x1=x0,
                    x2=x0 + step,
                    y1=y(reference[i]),
                    y2=y(reference[i]),
                    data_bin=names[i],
                    data_share=f"{reference[i]:.6f}",
                )
            )
    for i in range(0, count + 1, max(1, count // 8)):
        body.append(_text(left + i * step, height - bottom + 14, f"{edges[i]:g}", "tick-label", anchor="middle"))
    body.append(_text(WIDTH - 4, height - 4, "risk score", "tick-label", anchor="end"))
    description = "; ".join(
        f"risk {names[i]}: {shares[i]:.1%} of this batch"
        + (f", {reference[i]:.1%} in validation" if reference is not None else "")
        for i in range(count)
    )
    return _svg("histogram", chart_id, WIDTH, height, title, description, body)


def rate_chart(series: dict[str, Sequence[Rate]], chart_id: str, title: str) -> Markup:
    """Rates per period and series with their 95 % intervals (points and whiskers), one colour a series."""
    left, top, bottom = 40, 8, 30
    height = 190
    periods = sorted({r.period for rates in series.values() for r in rates})
    y = LinearScale(0.0, 1.0, height - bottom, top)
    step = (WIDTH - left - 8) / max(1, len(periods))
    offset = step / (len(series) + 1)
    body = [_tag("line", class_="axis", x1=float(left), x2=float(WIDTH - 4), y1=y(0.0), y2=y(0.0))]
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        body.append(_text(left - 4, y(level) + 4, f"{level:.0%}", "tick-label", anchor="end"))
        body.append(_tag("line", class_="grid", x1=float(left), x2=float(WIDTH - 4), y1=y(level), y2=y(level)))
    label_every = max(1, math.ceil(len(periods) / 8))
    for i, period in enumerate(periods):
        if i % label_every == 0:
            body.append(_text(left + step * (i + 0.5), height - bottom + 14, period, "tick-label", anchor="middle"))
    words = []
    for k, (name, rates) in enumerate(series.items()):
        for rate in rates:
            if rate.value is None:
                continue
            cx = left + step * periods.index(rate.period) + offset * (k + 1)
            low, high = rate.interval
            tip = _title(f"{name} {rate.period}: {rate.hits} of {rate.trials} ({rate.value:.0%}, 95% {low:.0%}-{high:.0%})")
            body.append(
                _tag(
                    "g",
                    tip
                    + _tag("line", class_="whisker", x1=cx, x2=cx, y1=y(low), y2=y(high))
                    + _tag("circle", cx=cx, cy=y(rate.value), r=3.5),
                    class_=f"rate series-{k}",
                    data_series=name,
                    data_period=rate.period,
                    data_hits=rate.hits,
                    data_trials=rate.trials,
                    data_low=f"{low:.4f}",
                    data_high=f"{high:.4f}",
                )
            )
        hits, trials = sum(r.hits for r in rates), sum(r.trials for r in rates)
        words.append(f"{name}: {hits} of {trials} over {len(rates)} periods")
        body.append(
            _tag(
                "g",
                _tag("circle", cx=float(left + 10 + 150 * k), cy=float(height - 6), r=3.5)
                + _text(left + 18 + 150 * k, height - 2, name, "tick-label"),
                class_=f"rate legend series-{k}",
            )
        )
    return _svg("rates", chart_id, WIDTH, height, title, "; ".join(words) or "No inspections yet.", body)


def capacity_chart(ports: Sequence[str], used: Sequence[float], capacity: float, chart_id: str, title: str) -> Markup:
    """Inspections used per port and day against the daily capacity (a marked line)."""
    label_px, top = 70, 4
    height = top + ROW_PX * max(1, len(ports)) + AXIS_PX
    peak = max(list(used) + [capacity], default=1) or 1
    x = LinearScale(0, peak * 1.1, label_px, WIDTH - 40)
    body = []
    for i, (port, value) in enumerate(zip(ports, used)):
        share = value / capacity if capacity else 0.0
        body += _bar_row(
            i,
            top,
            label_px,
            x,
            port,
            value,
            f"{value:,.1f} ({share:.0%})",
            f"{port}: {value:,.1f} per day of {capacity:g} ({share:.0%})",
            "bar" + (" over" if value > capacity else ""),
            data_port=port,
            data_value=f"{value:.4f}",
            data_share=f"{share:.4f}",
        )
    bottom = top + ROW_PX * max(1, len(ports))
    body.append(
        _tag(
            "line",
            _title(f"capacity {capacity:g} per port and day"),
            class_="capacity",
            x1=x(capacity),
            x2=x(capacity),
            y1=float(top),
            y2=float(bottom),
            data_value=f"{capacity:g}",
        )
    )
    body.append(_text(x(capacity), bottom + 14, f"capacity {capacity:g}/day", "tick-label", anchor="middle"))
    description = (
        "; ".join(
            f"{p}: {v:,.1f} inspections per day, {v / capacity if capacity else 0:.0%} of capacity {capacity:g}"
            for p, v in zip(ports, used)
        )
        or "No inspections yet."
    )
    return _svg("capacity", chart_id, WIDTH, height, title, description, body)


def heatmap(
    rows: Sequence[str],
    columns: Sequence[str],
    hits: dict[tuple[str, str], int],
    totals: dict[tuple[str, str], int],
    chart_id: str,
    title: str,
    column_labels: dict[str, str] | None = None,
) -> Markup:
    """Cells of ``rows`` × ``columns`` shaded by hits (e.g. flagged lines), written 'hits/total'.

    The shade is relative to the largest cell, so the few cells that hold the flagged lines stand out.
    """
    label_px, top, cell_w, cell_h = 60, 56, 62, 24
    width = label_px + cell_w * max(1, len(columns)) + 8
    height = top + cell_h * max(1, len(rows)) + 6
    peak = max(hits.values(), default=0) or 1
    body = []
    for j, column in enumerate(columns):
        cx = label_px + cell_w * (j + 0.5)
        body.append(
            _tag(
                "text",
                _title((column_labels or {}).get(column, column)) + str(escape(column)),
                x=cx,
                y=float(top - 8),
                class_="label",
                text_anchor="middle",
            )
        )
    for i, row in enumerate(rows):
        y = top + i * cell_h
        body.append(_text(label_px - 6, y + 16, row, "label", anchor="end"))
        for j, column in enumerate(columns):
            count, total = hits.get((row, column), 0), totals.get((row, column), 0)
            x0 = label_px + j * cell_w
            tip = _title(f"{row} × {column}: {count:,} flagged of {total:,} lines")
            body.append(
                _tag(
                    "g",
                    tip
                    + _tag(
                        "rect",
                        x=x0 + 1,
                        y=float(y + 1),
                        width=float(cell_w - 2),
                        height=float(cell_h - 2),
                        class_="cell",
                        fill_opacity=f"{0.08 + 0.92 * count / peak:.3f}" if total else "0",
                    )
                    + _text(x0 + cell_w / 2, y + 16, f"{count:,}/{total:,}" if total else "", "cell-label", anchor="middle"),
                    class_="heat",
                    data_row=row,
                    data_column=column,
                    data_hits=count,
                    data_total=total,
                )
            )
    description = (
        "; ".join(
            f"{r} × {c}: {hits.get((r, c), 0):,} flagged of {totals.get((r, c), 0):,}"
            for r in rows
            for c in columns
            if totals.get((r, c))
        )
        or "No lines under cover codes."
    )
    return _svg("heatmap", chart_id, width, height, title, description, body)
