"""The SVG chart of a check's history: its value against the threshold over time.

Computes geometry only (numbers and short labels); templates/check.html draws it with
autoescaping. Marked: the threshold (and recovery threshold), the periods the alert was
firing, notifications, silences and errors. A year of 5-minute evaluations is reduced
to the minimum and maximum of each pixel column, so spikes stay visible.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

WIDTH, HEIGHT = 960, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 18, 40
MAX_POINTS = 1200


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round numbers spanning [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _label(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:g}" if abs(v) >= 1 or v == 0 else f"{v:.3g}"


def _reduce(points: list[tuple[float, float | None]], columns: int) -> list[tuple[float, float | None]]:
    """Keep the min and max of each pixel column (gaps stay gaps)."""
    if len(points) <= MAX_POINTS:
        return points
    out: list[tuple[float, float | None]] = []
    bucket: list[tuple[float, float]] = []
    current = None
    for x, y in points:
        col = int(x * columns)
        if y is None:
            out.extend(sorted(set(bucket)))
            bucket, current = [], None
            out.append((x, None))
            continue
        if col != current and bucket:
            out.extend(sorted({min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])}))
            bucket = []
        current = col
        bucket.append((x, y))
    if bucket:
        out.extend(sorted({min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])}))
    return out


NOTE_PIXELS, NOTE_LINES = 3, 5  # one notification mark per 3 pixels at most, naming 5 at most


def _group_notifications(notes: list[dict[str, Any]], x_of) -> list[dict[str, Any]]:
    """Notifications in groups of NOTE_PIXELS pixels, as service.page_history's
    `notification_marks` are: {"n", "notes": the first NOTE_LINES}."""
    groups: dict[int, dict[str, Any]] = {}
    for n in notes:
        group = groups.setdefault(int(x_of(n["t"]) // NOTE_PIXELS), {"n": 0, "notes": []})
        group["n"] += 1
        if len(group["notes"]) < NOTE_LINES:
            group["notes"].append(n)
    return list(groups.values())


def _notification_marks(groups: list[dict[str, Any]], x_of) -> list[dict[str, Any]]:
    """One mark per group of notifications (at the first), titled with the first few."""
    out = []
    for group in groups:
        first, count = group["notes"][0], group["n"]
        lines = [f"{n['event']} → {', '.join(n['channels']) or 'not sent'} at {n['t']}" for n in group["notes"]]
        title = lines[0] if count == 1 else f"{count} notifications: " + "; ".join(lines[:NOTE_LINES]) + (
            " …" if count > NOTE_LINES else "")
        out.append({"x": x_of(first["t"]), "event": first["event"], "title": title})
    return out


def build(history: dict[str, Any], threshold: float | None, recovery: float | None, since: dt.datetime,
          until: dt.datetime) -> dict[str, Any]:
    """Geometry of the chart for templates/check.html. A baseline check has no threshold:
    its `bands` (the usual range of the entity judged worst at each T) are drawn instead."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max((until - since).total_seconds(), 1.0)

    def fx(t: dt.datetime) -> float:
        return min(max((t - since).total_seconds() / span, 0.0), 1.0)

    evals = history["evaluations"]
    values = [e["value"] for e in evals if e["value"] is not None]
    bands = history.get("bands") or []
    limits = ([threshold] if threshold is not None else []) + ([recovery] if recovery is not None else []) + [
        v for b in bands for v in (b["low"], b["high"])]
    lo = min([0.0, *limits, *values])
    hi = max([*limits, *values] or [1.0])
    hi = hi + (hi - lo) * 0.08 or 1.0
    ticks = nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])

    def X(frac: float) -> float:
        return round(LEFT + frac * plot_w, 1)

    def Y(v: float) -> float:
        return round(TOP + (1 - (v - lo) / (hi - lo)) * plot_h, 1)

    raw = [(fx(_t(e["t"])), e["value"] if e["status"] != "error" else None) for e in evals]
    segments, seg = [], []
    for frac, v in _reduce(raw, plot_w):
        if v is None:
            if seg:
                segments.append(seg)
            seg = []
            continue
        seg.append(f"{X(frac)},{Y(v)}")
    if seg:
        segments.append(seg)

    firing, start = [], None  # periods the alert was firing
    for e in evals:
        on = e["alert_status"] == "firing"
        if on and start is None:
            start = e["t"]
        elif not on and start is not None:
            firing.append((start, e["t"]))
            start = None
    if start is not None:
        firing.append((start, until.isoformat()))

    def band(a: str, b: str) -> dict[str, float]:
        x1, x2 = X(fx(_t(a))), X(fx(_t(b)))
        return {"x": x1, "width": max(x2 - x1, 1.5)}

    def x_of(t: str) -> float:
        return X(fx(_t(t)))

    marks = history.get("notification_marks")  # grouped by PostgreSQL (service.page_history), or:
    if marks is None:
        marks = _group_notifications(history["notifications"], x_of)

    n_ticks = 6
    x_ticks = []
    for i in range(n_ticks + 1):
        t = since + (until - since) * i / n_ticks
        fmt = "%H:%M" if span <= 2 * 86400 else "%b %d %H:%M" if span <= 10 * 86400 else "%b %d"
        x_ticks.append({"x": X(i / n_ticks), "label": t.astimezone(dt.timezone.utc).strftime(fmt)})

    band_area = ""
    if bands:  # the band as one polygon: the highs left to right, then the lows back
        xs = [X(fx(_t(b["t"]))) for b in bands]
        band_area = " ".join([f"{x},{Y(b['high'])}" for x, b in zip(xs, bands, strict=True)]
                             + [f"{x},{Y(b['low'])}" for x, b in reversed(list(zip(xs, bands, strict=True)))])
    return {
        "band_area": band_area,
        "expected": " ".join(f"{X(fx(_t(b['t'])))},{Y(b['expected'])}" for b in bands),
        "width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP,
        "bottom": HEIGHT - BOTTOM, "segments": [" ".join(s) for s in segments],
        "dots": [{"x": X(fx(_t(e["t"]))), "y": Y(e["value"]), "status": e["status"], "t": e["t"],
                  "value": e["value"]} for e in evals if e["value"] is not None] if len(evals) <= 150 else [],
        "threshold_y": Y(threshold) if threshold is not None else None,
        "threshold_label": _label(threshold) if threshold is not None else None,
        "recovery_y": Y(recovery) if recovery is not None else None,
        "y_ticks": [{"y": Y(v), "label": _label(v)} for v in ticks if lo <= v <= hi],
        "x_ticks": x_ticks,
        "firing": [band(a, b) for a, b in firing],
        "silences": [{**band(max(s["starts_at"], since.isoformat(), key=_t), min(s["ends_at"], until.isoformat(), key=_t)),
                      "title": f"silence #{s['id']} by {s['author']}: {s['reason']}"
                               + (f" (entity {s['entity_id']})" if s["entity_id"] else "")}
                     for s in history["silences"]],
        "notifications": _notification_marks(marks, x_of),
        "errors": [{"x": X(fx(_t(e["t"]))), "title": f"error at {e['t']}: {e['error'] or ''}"[:300]}
                   for e in evals if e["status"] == "error"],
        "empty": not evals,
    }
