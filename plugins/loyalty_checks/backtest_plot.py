"""The backtest's PNG (matplotlib, Agg): the value against the threshold over time.

One line per entity (the worst few; the check's value for a check without entities),
the threshold (and the current catalog's, when it differs; the recovery threshold), the
firing episodes shaded, and every notification marked at the top by event. With a sweep,
a second panel: notifications, pages and episodes per candidate value, clearly labelled
a suggestion.
"""

from __future__ import annotations

import datetime as dt
import math
import textwrap
from typing import Any

from loyalty_checks.channels import registry
from loyalty_checks.units import stored_time

EVENT_STYLE = {   # marker, colour, label
    "trigger": ("^", "#d62728", "trigger"),
    "update": ("D", "#ff7f0e", "update"),
    "reminder": ("o", "#9467bd", "reminder"),
    "escalate": ("*", "#8c564b", "escalate (pages)"),
    "resolve": ("v", "#2ca02c", "resolve"),
    "error": ("X", "#000000", "error"),
    "error_resolve": ("P", "#7f7f7f", "error resolved"),
}


_t = stored_time


def _value_text(value: float | None, unit: str) -> str:
    from loyalty_checks.text import format_value

    return format_value(value, unit)


def plot_png(result: dict[str, Any], path_or_file) -> None:
    """Write the PNG of a run_backtest(..., series=True) result to a path or a binary file."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    series = result.get("series")
    if not series:
        raise ValueError("the result has no series: run the backtest with series=True")
    sweep = result.get("sweep")
    fig, axes = plt.subplots(2 if sweep else 1, 1, figsize=(12, 9.5 if sweep else 5.8),
                             gridspec_kw={"height_ratios": [3, 2]} if sweep else None, squeeze=False)
    ax = axes[0][0]
    unit = series.get("unit") or ""
    scale = 100.0 if unit == "ratio" else 1.0     # ratios drawn as percentages
    shown_unit = "%" if unit == "ratio" else unit
    times = [_t(t) for t in series["t"]]

    for e in series["entities"]:
        ys = [v * scale if v is not None else math.nan for v in e["values"]]
        label = (e["name"] if e["id"] == "_" else
                 textwrap.shorten(f"{series.get('entity') or 'entity'} {e['name']} ({e['id']})", 40))
        ax.plot(times, ys, marker="." if len(times) <= 400 else None, markersize=4, linewidth=1.4, label=label)
    cmp = series.get("comparison", ">")
    banded = [e for e in series["entities"] if e.get("low")]
    if banded:  # a learned threshold: the usual range of the worst entity (5-95 %)
        e = banded[0]
        ax.fill_between(times, [v if v is not None else math.nan for v in e["low"]],
                        [v if v is not None else math.nan for v in e["high"]], color="#1f77b4", alpha=0.15,
                        linewidth=0, label=textwrap.shorten(f"usual range of {e['name']} (5–95 %)", 40))
    if series["threshold"] is not None:
        ax.axhline(series["threshold"] * scale, color="#d62728", linestyle="--", linewidth=1.6,
                   label=f"threshold: fires when {cmp} {_value_text(series['threshold'], unit)}")
    base = series.get("baseline_threshold")
    if base is not None and series["threshold"] is not None and base != series["threshold"]:
        ax.axhline(base * scale, color="#7f7f7f", linestyle=":", linewidth=1.4,
                   label=f"current catalog threshold {cmp} {_value_text(base, unit)}")
    if series.get("recovery_threshold") is not None:
        ax.axhline(series["recovery_threshold"] * scale, color="#2ca02c", linestyle=":", linewidth=1.2,
                   label=f"recovery threshold {_value_text(series['recovery_threshold'], unit)}")

    end = _t(result["end"])
    for i, ep in enumerate(result["episodes"]):
        ax.axvspan(_t(ep["start"]), _t(ep["end"]) or end, color="#d62728", alpha=0.09, linewidth=0,
                   label="firing (an episode)" if i == 0 else None)
    trans = ax.get_xaxis_transform()   # x in data, y in axes fraction: marks along the top
    by_event: dict[str, list[dt.datetime]] = {}
    for n in result["notifications"]:
        by_event.setdefault(n["event"], []).append(_t(n["t"]))
    pager = registry.pager()
    pages = [_t(n["t"]) for n in result["notifications"] if pager in n["channels"]]
    for event, ts in by_event.items():
        marker, colour, label = EVENT_STYLE.get(event, ("s", "#17becf", event))
        ax.scatter(ts, [0.96] * len(ts), transform=trans, marker=marker, s=70, color=colour, zorder=5,
                   edgecolors="white", linewidths=0.6, label=f"{label} ({len(ts)})", clip_on=False)
    if pages:
        ax.scatter(pages, [0.90] * len(pages), transform=trans, marker="s", s=30, color="#000000", zorder=5,
                   label=f"sent to PagerDuty ({len(pages)})", clip_on=False)

    s = result["summary"]
    title = (f"{result['check']} — backtest {_t(result['start']):%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC,"
             f" {result['evaluations']} evaluations\n{s['notifications']} notifications, {s['pages']} pages,"
             f" {s['episodes']} episodes, {s['flaps']} flaps, firing {s['firing_share'] * 100:.1f}% of the time")
    if "baseline" in result:
        b = result["baseline"]["summary"]
        title += (f"  (current catalog: {b['notifications']} notifications, {b['pages']} pages,"
                  f" {b['episodes']} episodes)")
    ax.set_title(title, fontsize=11, loc="left")
    metric = series.get("metric") or "value"
    ax.set_ylabel(textwrap.fill(f"{metric} [{shown_unit}]" if shown_unit else metric, 38), fontsize=9)
    ax.set_xlabel("time (UTC), one point per scheduled evaluation T")
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlim(_t(result["start"]), end)
    ax.set_ylim(bottom=min(0, ax.get_ylim()[0]), top=ax.get_ylim()[1] * 1.12 or 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)

    if sweep:
        sx = axes[1][0]
        field = result.get("sweep_field", "value")
        xs = [p["value"] for p in sweep]
        numeric = all(isinstance(x, (int, float)) for x in xs)
        pos = xs if numeric else list(range(len(xs)))
        for key, colour, marker in (("notifications", "#1f77b4", "o"), ("episodes", "#ff7f0e", "s"),
                                    ("pages", "#000000", "^"), ("flaps", "#9467bd", "x")):
            sx.plot(pos, [p["summary"][key] for p in sweep], marker=marker, color=colour, label=key)
        share = sx.twinx()
        share.plot(pos, [p["summary"]["firing_share"] * 100 for p in sweep], color="#d62728", linestyle="--",
                   label="firing share (right, %)")
        share.set_ylabel("firing share [% of evaluations]", fontsize=9)
        current = result["settings"].get(field)
        if numeric and isinstance(current, (int, float)):
            sx.axvline(current, color="#7f7f7f", linestyle=":", label=f"{field} of this run ({current})")
        if not numeric:
            sx.set_xticks(pos, [str(x) for x in xs])
        sx.set_xlabel(f"candidate {field}" + (f" [{shown_unit}]" if field in ("threshold", "recovery_threshold")
                                                and shown_unit and unit != "ratio" else ""))
        sx.set_ylabel("count over the period")
        sx.set_title(f"Threshold suggestion (a suggestion only): what each candidate {field} would have sent",
                     fontsize=11, loc="left")
        sx.grid(alpha=0.3)
        lines, labels = sx.get_legend_handles_labels()
        l2, lb2 = share.get_legend_handles_labels()
        sx.legend(lines + l2, labels + lb2, loc="upper left", bbox_to_anchor=(1.07, 1.0), fontsize=8, frameon=False)

    fig.tight_layout()
    fig.savefig(path_or_file, format="png", dpi=110)
    plt.close(fig)
