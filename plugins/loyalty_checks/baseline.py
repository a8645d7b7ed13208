"""Thresholds learned from each entity's own history: the statistics of a `baseline` check.

Pure: no database, no Airflow, numpy only. The check's SQL gives hourly counts per
entity; this module says, for the trailing window that ends at T, what count was usual,
how wide the usual range is, and whether the observed count is improbable enough to fire
(docs: ../shared/spec/baselines.md).

Interface
---------
    Settings(season, history, min_history, window, min_expected, tail, comparison)
    judge(settings, counts, t, first_seen, excluded=frozenset()) -> Judgement      one entity
    judge_all(settings, rows, t, excluded_by_entity=None) -> {entity_id: Judgement}
    HourlyCounts.from_rows(rows) / HourlyCounts(...)  then
    judge_counts(settings, hourly, t, excluded=None) -> {entity_id: Judgement}     a backtest:
        the matrix built once, judged at many T

`rows` are `(entity_id, hour_start, count, first_seen)`: the count of the whole UTC hour
that starts at `hour_start` (hours without a row count 0 once the entity exists; a row with
`hour_start` None only declares the entity), and when the entity's history starts
(`first_seen`, the same on each of its rows). `excluded` are hour starts left out of the
entity's history: the windows of its own firing evaluations and its silenced hours, so an
outage does not lower the bar.

The model
---------
History. At T, with W = `window` (whole hours) and H = `history`, the history is the
H before the longest judged window: the hours of [T - W - H, T - W) at or after
`first_seen` (the hour holding `first_seen` is partial and left out) and not excluded.
Its hours fall in season cells: the hour of the week (`hour_of_week`, 168 cells), the
hour of the day (`hour_of_day`, 24) or one cell (`none`). The usual level of a judged hour
is learned from its cell, i.e. the same hour of the previous weeks (days) within H.

Partial pooling (empirical Bayes, gamma-Poisson). The mean rate mu_c of each cell has a
gamma prior centred on the entity's overall hourly level m (all its history hours), with
a variance tau^2 + Var(m): tau^2 is how much the entity's cells really differ from m,
estimated by the method of moments (the spread of the cell means minus their sampling
variance), Var(m) the uncertainty of m itself. So alpha = m^2 / (tau^2 + Var(m)), beta =
alpha / m, and the posterior of mu_c is Gamma(alpha + c*S_c, beta + c*n_c) from the cell's
n_c hours summing to S_c, where c = 1 / (1 + phi * mean_c) discounts the Poisson likelihood
for the over-dispersion (a quasi-likelihood: an over-dispersed hour carries less
information than a Poisson one). A cell with many transactions keeps its own level; a
thin one (few hours, small counts) is pulled toward m. With one cell (`none`) there is
nothing to pool with: the prior is vague (alpha = 1e-3).

Over-dispersion. A window of L hours, given the cells' rates, has mean M = sum of mu and
variance M + phi_L * M^2 (negative binomial). phi_L is estimated from the entity's own
history by the method of moments on L-hour block sums grouped by the season cell of
their first hour (sum over cells of (n-1)(s^2 - mean) over sum of (n-1)(mean^2 - s^2/n)),
with a floor of DISPERSION_FLOOR: it measures how much more than Poisson the same L hours
vary from week to week, day-level swings (which move every hour of a window together)
included.

Prediction. Parameter uncertainty is allowed for: the predictive count of the window has
mean M = sum of the posterior means m_h and variance V = M + phi_L*(M^2 + U) + U, where U
is the posterior variance of the sum of the rates (cells independent; hours of one cell
counted together). The predictive distribution is the negative binomial with that mean
and variance (shape r = M^2 / (V - M), probability p = M / V): for one hour and phi = 0
it is exactly the gamma posterior's Poisson-gamma predictive NB(alpha', beta'/(1+beta')).

Judging. The shortest trailing window of whole hours (L = 1 .. W) whose M reaches
`min_expected` is judged; none reaches it: "not_judged". The p-value is P(X <= observed)
for "<" (a drop) and P(X >= observed) for ">" (a rise); the entity fires when the
p-value < `tail`. The band is the 5 %-95 % predictive interval (BAND): its low end is the
smallest count with P(X <= low) >= 5 %, its high end the smallest with P(X <= high) >= 95 %,
i.e. nine windows in ten fall in [low, high] ("usual ... is 41 (22-63)"). An entity whose
`first_seen` is less than `min_history` before T is "insufficient_history" and never
fires.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

FIRING, OK, NOT_JUDGED, INSUFFICIENT_HISTORY = "firing", "ok", "not_judged", "insufficient_history"
SEASONS = {"hour_of_week": 168, "hour_of_day": 24, "none": 1}
HOUR = dt.timedelta(hours=1)
BAND = (0.05, 0.95)          # the band: the 5 %-95 % predictive interval
DISPERSION_FLOOR = 0.02      # phi >= 0.02: the per-window coefficient of variation is at least 14 %
VAGUE_ALPHA = 1e-3           # the prior's shape where there is nothing to pool with (season none)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Settings:
    """A check's `baseline` block (the catalog parses the durations), with the check's comparison."""
    season: str = "hour_of_week"
    history: dt.timedelta = dt.timedelta(days=28)
    min_history: dt.timedelta = dt.timedelta(days=14)
    window: dt.timedelta = dt.timedelta(hours=3)
    min_expected: float = 12.0
    tail: float = 0.001
    comparison: str = "<"

    def __post_init__(self) -> None:
        if self.season not in SEASONS:
            raise ValueError(f"season must be one of {', '.join(SEASONS)}, not {self.season!r}")
        for name in ("history", "window"):
            value = getattr(self, name)
            if value <= dt.timedelta(0) or value % HOUR:
                raise ValueError(f"{name} must be a positive number of whole hours, not {value}")
        if self.min_history < dt.timedelta(0):
            raise ValueError(f"min_history must not be negative, not {self.min_history}")
        if not self.min_expected > 0:
            raise ValueError(f"min_expected must be positive, not {self.min_expected}")
        if not 0 < self.tail < 0.5:
            raise ValueError(f"tail must be between 0 and 0.5, not {self.tail}")
        if self.comparison not in ("<", ">"):
            raise ValueError(f"comparison must be '<' (a drop) or '>' (a rise), not {self.comparison!r}")

    @property
    def window_hours(self) -> int:
        return self.window // HOUR

    @property
    def history_hours(self) -> int:
        return self.history // HOUR


@dataclass(frozen=True)
class Judgement:
    """One entity at T.

    status: firing | ok | not_judged | insufficient_history. For firing and ok every field
    is set; for not_judged, observed and expected are those of the longest window (why it
    was not judged: expected < min_expected), band and p_value None; for
    insufficient_history only the status.
    """
    status: str
    observed: int | None = None                  # the count in the judged window: the entity's value
    expected: float | None = None                # the predictive mean of that count
    band: tuple[int, int] | None = None          # the 5 %-95 % predictive interval (BAND)
    p_value: float | None = None                 # P(X <= observed) for "<", P(X >= observed) for ">"
    window_hours: int | None = None              # L: the judged window is [window_start, T)
    window_start: dt.datetime | None = None
    label: str | None = None                     # the hours, e.g. "Tue 14:00–16:00"
    dispersion: float | None = None              # phi_L used (diagnostics)

    @property
    def firing(self) -> bool:
        return self.status == FIRING


# --------------------------------------------------------------------------- counts in a matrix

@dataclass
class HourlyCounts:
    """Hourly counts of many entities as a matrix: `counts[e, i]` is entity e's count in the
    hour starting `start + i h`; `first_seen[e]` when its history starts."""
    entities: list[Any]
    start: dt.datetime
    counts: np.ndarray
    first_seen: list[dt.datetime]

    def __post_init__(self) -> None:
        self.start = _utc(self.start)
        _whole_hour(self.start, "the first hour")
        self.counts = np.asarray(self.counts, dtype=np.float64)
        if self.counts.ndim != 2 or not self.counts.shape[0] == len(self.entities) == len(self.first_seen):
            raise ValueError("counts must be entities x hours, with a first_seen per entity")
        self.first_seen = [_utc(f) for f in self.first_seen]
        self.index = {e: i for i, e in enumerate(self.entities)}
        # the first whole hour of each entity's history, in hours from start (the partial hour left out)
        self._first = np.array([math.ceil((f - self.start) / HOUR) for f in self.first_seen], dtype=np.int64)
        self._first_seen_hours = np.array([(f - self.start) / HOUR for f in self.first_seen])

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Any, dt.datetime | None, float, dt.datetime]]) -> HourlyCounts:
        """From `(entity_id, hour_start, count, first_seen)` rows (hour_start None: the entity only)."""
        rows = list(rows)
        first: dict[Any, dt.datetime] = {}
        hours: list[tuple[Any, dt.datetime, float]] = []
        for entity, hour, count, seen in rows:
            seen = _utc(seen)
            if entity not in first or seen < first[entity]:
                first[entity] = seen
            if hour is not None:
                hours.append((entity, _utc(hour), count))
        entities = list(first)
        if not hours:
            start = min(first.values(), default=EPOCH).replace(minute=0, second=0, microsecond=0)
            return cls(entities, start, np.zeros((len(entities), 1)), [first[e] for e in entities])
        start = min(h for _, h, _ in hours)
        _whole_hour(start, "an hour_start")
        span = int((max(h for _, h, _ in hours) - start) / HOUR) + 1
        index = {e: i for i, e in enumerate(entities)}
        counts = np.zeros((len(entities), span))
        for entity, hour, count in hours:
            offset = (hour - start) / HOUR
            if offset != int(offset):
                raise ValueError(f"hour_start {hour.isoformat()} is not a whole hour")
            counts[index[entity], int(offset)] += count
        return cls(entities, start, counts, [first[e] for e in entities])

    def mask(self, excluded_by_entity: Mapping[Any, Iterable[dt.datetime]] | None) -> np.ndarray | None:
        """The excluded hours as a boolean matrix like `counts` (hours outside it are ignored)."""
        if not excluded_by_entity:
            return None
        out = np.zeros(self.counts.shape, dtype=bool)
        for entity, hours in excluded_by_entity.items():
            row = self.index.get(entity)
            if row is None:
                continue
            for hour in hours:
                offset = (_utc(hour) - self.start) / HOUR
                if offset == int(offset) and 0 <= offset < out.shape[1]:
                    out[row, int(offset)] = True
        return out


# --------------------------------------------------------------------------- the public functions

def judge(settings: Settings, counts: Mapping[dt.datetime, float], t: dt.datetime, first_seen: dt.datetime,
          excluded: Iterable[dt.datetime] = frozenset()) -> Judgement:
    """Judge one entity at T: `counts` maps the start of each whole UTC hour to its count."""
    rows = [(0, hour, count, first_seen) for hour, count in counts.items()] or [(0, None, 0, first_seen)]
    return judge_counts(settings, HourlyCounts.from_rows(rows), t, {0: excluded})[0]


def judge_all(settings: Settings, rows: Iterable[tuple[Any, dt.datetime | None, float, dt.datetime]],
              t: dt.datetime, excluded_by_entity: Mapping[Any, Iterable[dt.datetime]] | None = None
              ) -> dict[Any, Judgement]:
    """Judge every entity of `rows` (entity_id, hour_start, count, first_seen) at T."""
    return judge_counts(settings, HourlyCounts.from_rows(rows), t, excluded_by_entity)


def judge_counts(settings: Settings, hourly: HourlyCounts, t: dt.datetime,
                 excluded: Mapping[Any, Iterable[dt.datetime]] | np.ndarray | None = None) -> dict[Any, Judgement]:
    """Judge every entity of `hourly` at T (`excluded`: per entity, or a boolean matrix like counts)."""
    t = _utc(t)
    _whole_hour(t, "T")
    mask = hourly.mask(excluded) if not isinstance(excluded, np.ndarray) else excluded
    n_e = len(hourly.entities)
    if n_e == 0:
        return {}
    W, Hh, P = settings.window_hours, settings.history_hours, SEASONS[settings.season]
    t_idx = int((t - hourly.start) / HOUR)               # T in hours from hourly.start
    age = t_idx - hourly._first_seen_hours                # hours since first_seen
    established = age >= settings.min_history / HOUR
    busy = busy_enough(settings, hourly.counts, t_idx)
    entities = hourly.entities
    out: dict[Any, Judgement] = dict.fromkeys([entities[e] for e in np.flatnonzero(~established)], INSUFFICIENT)
    out.update(dict.fromkeys([entities[e] for e in np.flatnonzero(established & ~busy)], TOO_FEW))
    rows = np.flatnonzero(established & busy)
    if rows.size == 0:
        return out

    # the slice [T - W - H, T): history then window, padded in front so the history is whole periods;
    # hours outside the matrix count 0 (no row), those before first_seen are no history
    pad = (-Hh) % P
    lo = t_idx - W - Hh - pad
    hours = np.arange(lo, t_idx)
    inside = (hours >= 0) & (hours < hourly.counts.shape[1])
    counts = np.zeros((rows.size, hours.size))
    counts[:, inside] = hourly.counts[np.ix_(rows, hours[inside])]
    valid = np.broadcast_to(hours[None, :] >= hourly._first[rows, None], counts.shape).copy()
    if mask is not None:
        valid[:, inside] &= ~mask[np.ix_(rows, hours[inside])]
    valid[:, :pad] = False
    Hp = pad + Hh
    hist, hvalid = counts[:, :Hp] * valid[:, :Hp], valid[:, :Hp]
    window = counts[:, Hp:]

    # dispersion phi_L from L-hour block sums of the history, grouped by their first hour's cell
    phi = np.empty((rows.size, W))
    csum = np.concatenate([np.zeros((rows.size, 1)), np.cumsum(hist, axis=1)], axis=1)
    cbad = np.concatenate([np.zeros((rows.size, 1)), np.cumsum(~hvalid, axis=1)], axis=1)
    for L in range(1, W + 1):
        block = np.zeros((rows.size, Hp))
        ok = np.zeros((rows.size, Hp), dtype=bool)
        block[:, :Hp - L + 1] = csum[:, L:] - csum[:, :-L]
        ok[:, :Hp - L + 1] = (cbad[:, L:] - cbad[:, :-L]) == 0
        phi[:, L - 1] = _dispersion(block, ok, P)

    # cells: n, sum, mean; the overall level and the prior
    n_c = hvalid.reshape(rows.size, -1, P).sum(axis=1).astype(np.float64)
    s_c = hist.reshape(rows.size, -1, P).sum(axis=1)
    mean_c = np.divide(s_c, n_c, out=np.zeros_like(s_c), where=n_c > 0)
    N = n_c.sum(axis=1)
    level = np.divide(s_c.sum(axis=1), N, out=np.zeros(rows.size), where=N > 0)
    level_safe = np.maximum(level, 1e-9)
    phi1 = phi[:, 0]
    if P == 1:
        alpha = np.full(rows.size, VAGUE_ALPHA)
    else:
        spread = (n_c * (mean_c - level[:, None]) ** 2).sum(axis=1)
        noise = ((mean_c + phi1[:, None] * mean_c ** 2) * (n_c > 0)).sum(axis=1)
        tau2 = np.maximum(spread - noise, 0.0) / np.maximum(N, 1.0)
        var_level = (level_safe + phi1 * level_safe ** 2) / np.maximum(N, 1.0)
        alpha = level_safe ** 2 / (tau2 + var_level)
    beta = alpha / level_safe
    discount = 1.0 / (1.0 + phi1[:, None] * mean_c)
    a = alpha[:, None] + discount * s_c
    b = beta[:, None] + discount * n_c
    post_mean, post_var = a / b, a / b ** 2
    post_mean[level == 0], post_var[level == 0] = 0.0, 0.0     # never a transaction: nothing usual

    # each window length L = 1..W (the last L hours): mean, variance, observed
    cells = np.arange(W) % P                 # the cell of window hour w (w = 0 is T - W)
    M = np.empty((rows.size, W))
    V = np.empty((rows.size, W))
    X = np.empty((rows.size, W))
    for L in range(1, W + 1):
        per_cell = np.bincount(cells[W - L:], minlength=P).astype(np.float64)
        m = post_mean @ per_cell
        u = post_var @ per_cell ** 2
        M[:, L - 1] = m
        V[:, L - 1] = m + phi[:, L - 1] * (m ** 2 + u) + u
        X[:, L - 1] = window[:, W - L:].sum(axis=1)
    reaches = M >= settings.min_expected
    judged = reaches.any(axis=1) & (N > 0)
    L_idx = np.where(judged, reaches.argmax(axis=1), W - 1)     # the shortest window reaching min_expected
    pick = np.arange(rows.size)
    m, v, x, ph = M[pick, L_idx], V[pick, L_idx], X[pick, L_idx], phi[pick, L_idx]

    j = np.flatnonzero(judged)
    p_values = np.empty(rows.size)
    low = np.zeros(rows.size, dtype=np.int64)
    high = np.zeros(rows.size, dtype=np.int64)
    if j.size:
        r, p = nbinom_params(m[j], v[j])
        if settings.comparison == "<":
            p_values[j] = nbinom_cdf(x[j], r, p)
        else:
            p_values[j] = nbinom_sf(x[j] - 1, r, p)
        qs = nbinom_ppf(np.concatenate([np.full(j.size, BAND[0]), np.full(j.size, BAND[1])]),
                        np.tile(r, 2), np.tile(p, 2), np.tile(m[j], 2), np.tile(v[j], 2))
        low[j], high[j] = qs[:j.size], qs[j.size:]

    for k, e in enumerate(rows):
        L = int(L_idx[k]) + 1
        start = t - L * HOUR
        common = dict(observed=int(round(x[k])), expected=float(m[k]), window_hours=L, window_start=start,
                      label=hours_label(settings.season, start, t), dispersion=float(ph[k]))
        if not judged[k]:
            out[hourly.entities[e]] = Judgement(NOT_JUDGED, **common)
            continue
        fires = bool(p_values[k] < settings.tail)
        out[hourly.entities[e]] = Judgement(FIRING if fires else OK, band=(int(low[k]), int(high[k])),
                                            p_value=float(p_values[k]), **common)
    return out


INSUFFICIENT = Judgement(INSUFFICIENT_HISTORY)
TOO_FEW = Judgement(NOT_JUDGED)  # left out by busy_enough: too few transactions to be judged


def busy_enough(settings: Settings, counts: np.ndarray, t_idx: int) -> np.ndarray:
    """Which entities can be judged at all at T (hour index `t_idx` of `counts`): those with,
    over the judged window's hours (the W before T) of each earlier week within `history`,
    at least half of `min_expected` a week on average. One below it expects too few in the
    window to be judged; leaving it out early saves the model's work (and the check's SQL
    applies the same rule to what it reads; `make bench` checks that it changes no judgement)."""
    W, weeks = settings.window_hours, settings.history_hours // 168
    if weeks == 0:
        return np.ones(counts.shape[0], dtype=bool)
    total = np.zeros(counts.shape[0])
    for k in range(1, weeks + 1):
        a, b = max(t_idx - 168 * k - W, 0), min(max(t_idx - 168 * k, 0), counts.shape[1])
        if a < b:
            total += counts[:, a:b].sum(axis=1)
    return total >= settings.min_expected / 2 * weeks


def hours_label(season: str, start: dt.datetime, end: dt.datetime) -> str:
    """The hours [start, end) as people read them: "Tue 14:00–16:00" (hour_of_week),
    "14:00–16:00" (hour_of_day), "any 2 h" (none); "Tue 23:00–Wed 01:00", "Tue 22:00–24:00"."""
    if season == "none":
        return f"any {int((end - start) / HOUR)} h"
    start, end = _utc(start), _utc(end)
    last = end - HOUR
    to = "24:00" if end.hour == 0 and last.date() == start.date() else f"{end:%H:%M}"
    if season == "hour_of_day":
        return f"{start:%H:%M}–{to}"
    day = WEEKDAYS[start.weekday()]
    if last.date() != start.date():
        return f"{day} {start:%H:%M}–{WEEKDAYS[end.weekday()]} {end:%H:%M}"
    return f"{day} {start:%H:%M}–{to}"


# --------------------------------------------------------------------------- statistics

def _dispersion(block: np.ndarray, ok: np.ndarray, P: int) -> np.ndarray:
    """phi of the blocks, per row, by the method of moments within season cells (floored)."""
    rows = block.shape[0]
    x = (block * ok).reshape(rows, -1, P)
    w = ok.reshape(rows, -1, P)
    n = w.sum(axis=1).astype(np.float64)
    s1 = x.sum(axis=1)
    s2 = (x * x).sum(axis=1)
    use = n >= 2
    mean = np.divide(s1, n, out=np.zeros_like(s1), where=use)
    var = np.divide(s2 - n * mean ** 2, n - 1, out=np.zeros_like(s1), where=use)
    num = ((n - 1) * (var - mean) * use).sum(axis=1)
    den = ((n - 1) * (mean ** 2 - np.divide(var, n, out=np.zeros_like(var), where=use)) * use).sum(axis=1)
    phi = np.divide(num, den, out=np.zeros(rows), where=den > 0)
    return np.maximum(phi, DISPERSION_FLOOR)


def nbinom_params(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The negative binomial with this mean and variance (var > mean): shape r, probability p."""
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    return mean ** 2 / (var - mean), mean / var


def nbinom_cdf(k: np.ndarray, r: np.ndarray, p: np.ndarray) -> np.ndarray:
    """P(X <= k) for X ~ NB(r, p) (pmf C(k+r-1, k) p^r (1-p)^k): I_p(r, k+1); 0 for k < 0."""
    k = np.floor(np.asarray(k, dtype=np.float64))
    r, p = np.broadcast_arrays(np.asarray(r, dtype=np.float64), np.asarray(p, dtype=np.float64))
    k = np.broadcast_to(k, r.shape)
    out = np.zeros(r.shape)
    some = k >= 0
    out[some] = betainc(r[some], k[some] + 1, p[some])
    return out


def nbinom_sf(k: np.ndarray, r: np.ndarray, p: np.ndarray) -> np.ndarray:
    """P(X > k) = I_(1-p)(k+1, r), computed directly (accurate in the far upper tail); 1 for k < 0."""
    k = np.floor(np.asarray(k, dtype=np.float64))
    r, p = np.broadcast_arrays(np.asarray(r, dtype=np.float64), np.asarray(p, dtype=np.float64))
    k = np.broadcast_to(k, r.shape)
    out = np.ones(r.shape)
    some = k >= 0
    out[some] = betainc(k[some] + 1, r[some], 1 - p[some])
    return out


def nbinom_ppf(q: np.ndarray, r: np.ndarray, p: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """The smallest integer k with P(X <= k) >= q (bisection from a normal bracket)."""
    sd = np.sqrt(var)
    lo = np.maximum(np.floor(mean - 8 * sd) - 1, -1.0)      # P(X <= lo) < q (checked below)
    hi = np.ceil(mean + 8 * sd) + 1                          # P(X <= hi) >= q (checked below)
    while True:
        bad = nbinom_cdf(lo, r, p) >= q
        bad &= lo > -1
        if not bad.any():
            break
        lo[bad] = np.maximum(lo[bad] - 4 * sd[bad] - 1, -1)
    while True:
        bad = nbinom_cdf(hi, r, p) < q
        if not bad.any():
            break
        hi[bad] = hi[bad] + 4 * sd[bad] + 1
    while True:
        gap = hi - lo > 1
        if not gap.any():
            return hi.astype(np.int64)
        mid = np.floor((lo + hi) / 2)
        below = nbinom_cdf(mid, r, p) < q
        lo = np.where(gap & below, mid, lo)
        hi = np.where(gap & ~below, mid, hi)


_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])


def betainc(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The regularized incomplete beta function I_x(a, b), elementwise (a, b > 0, 0 <= x <= 1):
    the continued fraction (modified Lentz), on the side of x where it converges fast."""
    a, b, x = (np.asarray(v, dtype=np.float64) for v in (a, b, x))
    a, b, x = np.broadcast_arrays(a, b, x)
    out = np.where(x >= 1, 1.0, 0.0)
    inner = (x > 0) & (x < 1)
    if not inner.any():
        return out
    a, b, x = a[inner], b[inner], x[inner]
    flip = x > (a + 1) / (a + b + 2)
    aa, bb, xx = np.where(flip, b, a), np.where(flip, a, b), np.where(flip, 1 - x, x)
    log_front = (_lgamma(aa + bb) - _lgamma(aa) - _lgamma(bb) + aa * np.log(xx) + bb * np.log1p(-xx))
    value = np.exp(log_front) * _betacf(aa, bb, xx) / aa
    out[inner] = np.where(flip, 1 - value, value)
    return out


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray, eps: float = 1e-15, tiny: float = 1e-300) -> np.ndarray:
    qab, qap, qam = a + b, a + 1, a - 1
    c = np.ones_like(x)
    d = 1 - qab * x / qap
    d = 1 / np.where(np.abs(d) < tiny, tiny, d)
    h = d.copy()
    for m in range(1, 10_000):
        m2 = 2 * m
        step = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + step * d
        d = 1 / np.where(np.abs(d) < tiny, tiny, d)
        c = 1 + step / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        h *= d * c
        step = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + step * d
        d = 1 / np.where(np.abs(d) < tiny, tiny, d)
        c = 1 + step / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        delta = d * c
        h *= delta
        if np.all(np.abs(delta - 1) < eps):
            break
    return h


# --------------------------------------------------------------------------- time

def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _whole_hour(value: dt.datetime, what: str) -> None:
    if value.minute or value.second or value.microsecond:
        raise ValueError(f"{what} must be a whole UTC hour, not {value.isoformat()}")
