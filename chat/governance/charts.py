"""Per-day bar charts as server-rendered SVG, readable without JavaScript.

Each chart has a y axis with a "nice" top and tick labels in its unit, day
labels under the x axis, a value on every bar that shows on hover and on
keyboard focus (bars are focusable), a <title> tooltip, and the same numbers
as a table for screen readers and copying. A range with no usage says so
instead of inventing a scale.
"""

from dataclasses import dataclass, field
from datetime import date, timedelta

WIDTH, HEIGHT = 720, 180
LEFT, BOTTOM, TOP = 64, 22, 12  # room for the y labels, the day labels, the top label
PLOT_W, PLOT_H = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP


@dataclass
class Bar:
    day: date
    value: float
    label: str
    x: float
    y: float
    width: float
    height: float


@dataclass
class Chart:
    unit: str
    bars: list[Bar]
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (y, label)
    days: list[tuple[float, str]] = field(default_factory=list)  # (x, label)
    empty: bool = False
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    plot_top: int = TOP
    plot_bottom: int = HEIGHT - BOTTOM
    plot_right: int = WIDTH - 4
    label_x: int = LEFT - 6
    days_y: int = HEIGHT - 6


def nice_top(peak: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above the peak."""
    if peak <= 0:
        return 1.0
    scale = 10 ** _exponent(peak)
    for step in (1, 2, 2.5, 5, 10):
        if peak <= step * scale:
            return step * scale
    return 10 * scale


def _exponent(value: float) -> int:
    exponent = 0
    while value >= 10:
        value, exponent = value / 10, exponent + 1
    while value < 1:
        value, exponent = value * 10, exponent - 1
    return exponent


def format_value(value: float, unit: str) -> str:
    if unit == "USD":
        return f"${value:,.4f}" if 0 < value < 1 else f"${value:,.2f}"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def daily(rows, start: date, end: date, metric: str, unit: str) -> Chart:
    """`rows`: dicts with "day" and `metric`; one bar per day from start to end."""
    by_day = {row["day"]: float(row[metric] or 0) for row in rows}
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    values = [by_day.get(day, 0.0) for day in days]
    peak = max(values, default=0.0)
    top = nice_top(peak)
    slot = PLOT_W / len(days)
    bars = []
    for index, (day, value) in enumerate(zip(days, values, strict=True)):
        height = value / top * PLOT_H
        bars.append(
            Bar(
                day=day,
                value=value,
                label=format_value(value, unit),
                x=round(LEFT + index * slot + 1, 1),
                y=round(TOP + PLOT_H - height, 1),
                width=round(max(slot - 2, 1), 1),
                height=round(height, 1),
            )
        )
    ticks = [
        (round(TOP + PLOT_H - fraction * PLOT_H, 1), format_value(top * fraction, unit))
        for fraction in (0, 0.5, 1)
    ]
    step = max(1, len(days) // 6)
    labels = [
        (round(LEFT + i * slot + slot / 2, 1), f"{days[i]:%b} {days[i].day}")
        for i in range(0, len(days), step)
    ]
    return Chart(unit=unit, bars=bars, ticks=ticks, days=labels, empty=peak == 0)
