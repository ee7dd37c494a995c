"""Server-rendered SVG charts (pygal) for the report pages, in the tenant's brand colours.

A chart is inline SVG: no JavaScript, nothing fetched from elsewhere (pygal's own script tag, which
only configures its optional tooltip script, is removed). Each chart has a title that screen
readers announce (`role="img"`, `aria-labelledby`) and the page shows the same numbers as a plain
table beside it. Amounts are plotted in minor units (integers, exactly as stored) and every label
and tooltip shows them in major units through `core.money.format_amount`; plotting positions are
the only floats.
"""

from __future__ import annotations

import re
import sys
import uuid
from dataclasses import dataclass
from decimal import Decimal

import pygal
from markupsafe import Markup
from pygal.style import Style

from core.money import format_amount

# pygal appends an import hook for its map plugins (`pygal.maps.*`, unused here) that has no
# `find_spec`: every later failed import anywhere in the process then raises an ImportWarning.
sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__name__ != "PluginImportFixer"]
WIDTH, HEIGHT = 760, 300
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_SVG_OPEN = re.compile(r"<svg\b([^>]*)>")


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    svg: Markup


def _style(colors: tuple[str, ...]) -> Style:
    return Style(
        background="transparent",
        plot_background="transparent",
        foreground="#333",
        foreground_strong="#111",
        foreground_subtle="#888",
        colors=colors,
        font_family="system-ui, sans-serif",
        label_font_size=11,
        major_label_font_size=11,
        legend_font_size=12,
        title_font_size=14,
        tooltip_font_size=12,
    )


def _money_formatter(currency: str):
    def formatter(value) -> str:
        if value is None:
            return "—"
        return format_amount(int(round(value)), currency)

    return formatter


def _render(chart, title: str) -> Chart:
    ident = f"chart-{uuid.uuid4().hex[:12]}"
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    # The chart is an image named by its title, for screen readers; its parts are not read one by one.
    svg = _SVG_OPEN.sub(
        lambda m: f'<svg{m.group(1)} role="img" aria-labelledby="{ident}-title" focusable="false">', svg, count=1
    )
    return Chart(ident, title, Markup(svg))  # noqa: S704  (pygal escapes every text it writes)


def _base(kind, title: str, colors: tuple[str, ...], **options):
    return kind(
        js=[],
        disable_xml_declaration=True,
        explicit_size=False,
        width=WIDTH,
        height=HEIGHT,
        title=None,  # the page shows the title in the figure's caption
        style=_style(colors),
        legend_at_bottom=True,
        legend_at_bottom_columns=4,
        x_label_rotation=0,
        truncate_label=-1,
        show_minor_x_labels=False,
        print_values=False,
        **options,
    )


def _x_labels(chart, labels: list[str]) -> None:
    chart.x_labels = labels
    # About six readable labels along the axis, whatever the number of periods.
    chart.config.x_labels_major_every = max(1, -(-len(labels) // 6))


def money_bars(
    title: str, currency: str, labels: list[str], series: list[tuple[str, list[int]]], colors, *, stacked=False
) -> Chart:
    """Bars of amounts (minor units of `currency`) per label, one colour per series."""
    chart = _base(
        pygal.StackedBar if stacked else pygal.Bar,
        title,
        colors,
        value_formatter=_money_formatter(currency),
    )
    _x_labels(chart, labels)
    for name, values in series:
        chart.add(name, [{"value": v, "label": format_amount(v, currency)} for v in values])
    return _render(chart, title)


def count_bars(title: str, labels: list[str], series: list[tuple[str, list[int]]], colors) -> Chart:
    chart = _base(pygal.Bar, title, colors, value_formatter=lambda v: f"{int(round(v or 0))}")
    _x_labels(chart, labels)
    for name, values in series:
        chart.add(name, values)
    return _render(chart, title)


def percent_line(title: str, labels: list[str], name: str, values: list[Decimal | None], colors) -> Chart:
    """A line of percentages (None: no value that period, a gap in the line)."""
    chart = _base(
        pygal.Line,
        title,
        colors,
        range=(0, 100),
        value_formatter=lambda v: "—" if v is None else f"{v:.1f} %",
        allow_interruptions=True,
        dots_size=3,
    )
    _x_labels(chart, labels)
    chart.add(name, [None if v is None else float(v) for v in values])
    return _render(chart, title)


def money_hbars(title: str, currency: str, items: list[tuple[str, int]], colors) -> Chart:
    """One horizontal bar per item (a product, a channel, a merchant): its amount in `currency`."""
    chart = _base(pygal.HorizontalBar, title, colors, value_formatter=_money_formatter(currency), show_legend=True)
    for name, value in items:
        chart.add(name, [{"value": value, "label": format_amount(value, currency)}])
    return _render(chart, title)
