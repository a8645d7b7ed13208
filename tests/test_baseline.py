"""loyalty_checks.baseline on small hand-made histories: the expected count, the band, the
edge of `tail`, too little history, not judged, the window that shrinks, an outage left out
of the history, over-dispersion. The numbers are worked out here from the model's
documented formulas (the module's docstring) and a plain negative binomial sum, not read
back from the code under test."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from loyalty_checks.baseline import (
    DISPERSION_FLOOR,
    FIRING,
    INSUFFICIENT_HISTORY,
    NOT_JUDGED,
    OK,
    Settings,
    betainc,
    hours_label,
    judge,
    judge_all,
    nbinom_cdf,
    nbinom_params,
    nbinom_ppf,
    nbinom_sf,
)

H = dt.timedelta(hours=1)
T = dt.datetime(2026, 5, 19, 16, tzinfo=dt.UTC)      # a Tuesday, 16:00 UTC
SINCE = T - dt.timedelta(days=30)                     # established: 30 days of history


def history(level, days: int = 30, window: dict[int, int] | None = None) -> dict[dt.datetime, int]:
    """Hourly counts for the `days` before T: level(hour_start) each hour; `window` overrides
    the last hours ({1: count of [T-1h, T), 2: count of [T-2h, T-1h), ...})."""
    f = level if callable(level) else (lambda _h: level)
    counts = {T - k * H: f(T - k * H) for k in range(1, days * 24 + 1)}
    for k, count in (window or {}).items():
        counts[T - k * H] = count
    return counts


# a plain negative binomial, term by term (pmf C(k+r-1, k) p^r (1-p)^k)
def pmf(k: int, r: float, p: float) -> float:
    return math.exp(math.lgamma(k + r) - math.lgamma(r) - math.lgamma(k + 1) + r * math.log(p) + k * math.log1p(-p))


def cdf(k: int, r: float, p: float) -> float:
    return math.fsum(pmf(j, r, p) for j in range(k + 1))


def quantile(q: float, r: float, p: float) -> int:
    total, k = 0.0, 0
    while True:
        total += pmf(k, r, p)
        if total >= q:
            return k
        k += 1


def shop(usual):
    """A store closed 20:00-08:00 whose open hours alternate from week to week between
    usual(h) + usual(h) // 4 and usual(h) - usual(h) // 4 (about Poisson's spread)."""
    def count(h: dt.datetime) -> int:
        if h.hour < 8 or h.hour >= 20:
            return 0
        base = usual(h)
        return base + (base // 4 if ((T - h) // dt.timedelta(days=7)) % 2 else -(base // 4))
    return count


def constant_history_prediction(level: float, hours: int, history_hours: int = 28 * 24,
                                weeks: int = 4) -> tuple[float, float, float]:
    """The documented model for a history of `level` every hour: (M, r, p) of `hours` hours.

    The cells do not vary: the dispersion is the floor, tau^2 = 0; the prior is the overall
    level with Var(m) = (m + phi m^2) / N (N history hours); each judged cell has `weeks`
    hours summing to weeks * level."""
    phi, m = DISPERSION_FLOOR, level
    alpha = m ** 2 / ((m + phi * m ** 2) / history_hours)
    beta = alpha / m
    c = 1 / (1 + phi * level)
    a, b = alpha + c * weeks * level, beta + c * weeks
    M, U = hours * a / b, hours * a / b ** 2
    V = M + phi * (M ** 2 + U) + U
    return M, M ** 2 / (V - M), M / V


# --------------------------------------------------------------------------- the expected count and the band

def test_a_constant_history_gives_its_level_and_a_band_from_the_negative_binomial():
    j = judge(Settings(), history(10), T, SINCE)
    M, r, p = constant_history_prediction(10, 2)
    assert j.status == OK
    assert j.window_hours == 2 and j.window_start == T - 2 * H      # 10 < 12 <= 20: the last 2 hours
    assert j.label == "Tue 14:00–16:00"
    assert j.observed == 20
    assert j.expected == pytest.approx(20.0, rel=1e-12) and M == pytest.approx(20.0, rel=1e-12)
    assert j.band == (quantile(0.05, r, p), quantile(0.95, r, p)) == (12, 29)
    assert j.p_value == pytest.approx(cdf(20, r, p), rel=1e-10)
    assert j.dispersion == DISPERSION_FLOOR


def test_the_band_is_the_5_to_95_percent_predictive_interval():
    j = judge(Settings(), history(30), T, SINCE)                  # 30 >= 12: the last hour alone
    M, r, p = constant_history_prediction(30, 1)
    low, high = j.band
    assert j.window_hours == 1 and j.expected == pytest.approx(30.0, rel=1e-12)
    assert cdf(low, r, p) >= 0.05 > cdf(low - 1, r, p)
    assert cdf(high, r, p) >= 0.95 > cdf(high - 1, r, p)
    assert (low, high) == (19, 42)


# --------------------------------------------------------------------------- the edge of tail

def test_it_fires_exactly_when_the_lower_tail_is_below_tail():
    counts = history(10, window={1: 3, 2: 3})                     # 6 in the last 2 h, usually 20
    _, r, p = constant_history_prediction(10, 2)
    at_edge = judge(Settings(), counts, T, SINCE)
    assert at_edge.observed == 6
    assert at_edge.p_value == pytest.approx(cdf(6, r, p), rel=1e-10)
    assert 0.001 < at_edge.p_value < 0.0013                       # P(X <= 6) = 0.00121...: not below 0.001
    assert at_edge.status == OK
    assert judge(Settings(tail=at_edge.p_value), counts, T, SINCE).status == OK          # p < tail is strict
    assert judge(Settings(tail=float(np.nextafter(at_edge.p_value, 1))), counts, T, SINCE).status == FIRING
    assert judge(Settings(), history(10, window={1: 2, 2: 3}), T, SINCE).status == FIRING   # 5: p = 0.0003


def test_a_rise_is_judged_on_the_upper_tail():
    _, r, p = constant_history_prediction(10, 2)
    rise = judge(Settings(comparison=">"), history(10, window={1: 22, 2: 20}), T, SINCE)
    assert rise.p_value == pytest.approx(1 - cdf(41, r, p), rel=1e-8)      # P(X >= 42)
    assert rise.status == FIRING
    assert judge(Settings(comparison=">"), history(10, window={1: 3, 2: 3}), T, SINCE).status == OK


# --------------------------------------------------------------------------- too little history, not judged

def test_a_store_younger_than_min_history_never_fires():
    young = T - dt.timedelta(days=14) + H
    counts = history(40, window={1: 0, 2: 0, 3: 0})
    assert judge(Settings(), counts, T, young) == judge(Settings(), counts, T, young)
    assert judge(Settings(), counts, T, young).status == INSUFFICIENT_HISTORY
    assert judge(Settings(), counts, T, young).observed is None
    assert judge(Settings(), counts, T, T + H).status == INSUFFICIENT_HISTORY          # not there yet
    assert judge(Settings(), counts, T, T - dt.timedelta(days=14)).status == FIRING    # exactly min_history


def test_not_judged_when_even_the_longest_window_expects_fewer_than_min_expected():
    j = judge(Settings(), history(3, window={1: 0, 2: 0, 3: 0}), T, SINCE)
    assert j.status == NOT_JUDGED
    assert (j.window_hours, j.observed) == (3, 0)
    assert j.expected == pytest.approx(9.0, rel=1e-12)
    assert j.band is None and j.p_value is None
    assert judge(Settings(min_expected=9), history(3), T, SINCE).status == OK


def test_the_window_is_the_shortest_whose_expected_count_reaches_min_expected():
    assert judge(Settings(), history(15), T, SINCE).window_hours == 1
    assert judge(Settings(), history(10), T, SINCE).window_hours == 2
    assert judge(Settings(), history(5), T, SINCE).window_hours == 3
    assert judge(Settings(window=dt.timedelta(hours=2)), history(5), T, SINCE).status == NOT_JUDGED
    # closed at night; 15:00 is usually 2, 14:00 about 12: the last hour alone is too thin, two hours reach 12
    j = judge(Settings(), history(shop(lambda h: 2 if h.hour == 15 else 12 if h.hour == 14 else 10)), T, SINCE)
    assert j.status == OK and j.window_hours == 2 and j.label == "Tue 14:00–16:00"
    assert 13 < j.expected < 14.5


def test_an_entity_without_any_transaction_is_not_judged():
    j = judge(Settings(), {}, T, SINCE)
    assert j.status == NOT_JUDGED and j.expected is None  # left out before the model (busy_enough)
    assert judge(Settings(), {T - 40 * 24 * H: 5}, T, SINCE).status == NOT_JUDGED  # a row before the history


def test_only_entities_busy_enough_in_the_windows_hours_of_earlier_weeks_are_judged():
    """At least min_expected / 2 a week over the window's hours of the 4 earlier weeks: 24 in
    all. 24 spread over them is judged (and its expected computed); 23 is left out."""
    def weeks(total: int) -> dict:
        counts = {T - 7 * 24 * H * k - h * H: 0 for k in range(1, 5) for h in (1, 2, 3)}
        for i in range(total):
            k, h = i % 4 + 1, i // 4 % 3 + 1
            counts[T - 7 * 24 * H * k - h * H] += 1
        return counts
    assert judge(Settings(min_expected=2), weeks(3), T, SINCE).expected is None        # 3 < 2 / 2 * 4
    edge = judge(Settings(min_expected=2), weeks(4), T, SINCE)
    assert edge.expected is not None and edge.status in (OK, FIRING, NOT_JUDGED)
    assert judge(Settings(), weeks(23), T, SINCE).expected is None
    assert judge(Settings(), weeks(24), T, SINCE).expected is not None


# --------------------------------------------------------------------------- its own outage left out

def test_an_outage_in_its_own_history_is_excluded_so_it_does_not_lower_the_bar():
    outage = [T - dt.timedelta(days=7) - k * H for k in range(1, 9)]     # last Tuesday 08:00-16:00: nothing
    counts = history(shop(lambda h: 10), window={1: 1, 2: 2})             # 3 in the last 2 h, usually ~19
    for hour in outage:
        counts[hour] = 0
    with_outage = judge(Settings(), counts, T, SINCE)
    left_out = judge(Settings(), counts, T, SINCE, excluded=outage)
    assert with_outage.expected < 14 and with_outage.status == OK        # the outage lowered the bar
    assert 0.001 < with_outage.p_value < 0.004
    assert left_out.expected > 17.5 and left_out.status == FIRING
    assert left_out.p_value < 0.0004
    assert judge(Settings(), counts, T, SINCE, excluded=outage[:1]).expected < left_out.expected


def test_the_excluded_hours_are_left_out_not_counted_as_usual():
    outage = [T - dt.timedelta(days=7) - k * H for k in range(1, 9)]
    counts = history(10, window={1: 3, 2: 2})
    for hour in outage:
        counts[hour] = 0
    left_out = judge(Settings(), counts, T, SINCE, excluded=outage)
    _, r, p = constant_history_prediction(10, 2, history_hours=28 * 24 - 8, weeks=3)
    assert left_out.expected == pytest.approx(20.0, rel=1e-12)              # the 0s are gone: 10 an hour
    assert left_out.p_value == pytest.approx(cdf(5, r, p), rel=1e-10)
    assert left_out.band == (12, 29) and left_out.status == FIRING
    assert judge(Settings(), counts, T, SINCE).expected < 20


# --------------------------------------------------------------------------- over-dispersion

def test_over_dispersion_widens_the_band_beyond_poisson():
    # the same hour alternates 5 and 15 from week to week: mean 10, variance 33 (Poisson: 10)
    alternating = history(lambda h: 5 if ((T - h) // dt.timedelta(days=7)) % 2 else 15)
    wide = judge(Settings(), alternating, T, SINCE)
    narrow = judge(Settings(), history(10), T, SINCE)
    poisson = (quantile(0.05, 1e9, 1e9 / (1e9 + 20)), quantile(0.95, 1e9, 1e9 / (1e9 + 20)))
    assert poisson == (13, 28)
    assert wide.expected == pytest.approx(narrow.expected, rel=1e-12) == 20.0
    assert narrow.band == (12, 29)                    # the dispersion floor: a little wider than Poisson
    assert wide.dispersion > 0.2
    low, high = wide.band
    assert low < 12 and high > 29 and high - low >= 2 * (poisson[1] - poisson[0])


# --------------------------------------------------------------------------- many entities at once

def test_judge_all_judges_each_entity_as_judge_does():
    stores = {"kiosk": history(3), "flagship": history(30, window={1: 5}), "main": history(10, window={1: 3, 2: 3})}
    first = {"kiosk": SINCE, "flagship": SINCE, "main": SINCE, "new": T - dt.timedelta(days=3)}
    rows = [(s, h, c, first[s]) for s, counts in stores.items() for h, c in counts.items()]
    rows += [("new", T - 2 * H, 7, first["new"]), ("quiet", None, 0, SINCE)]
    excluded = {"main": [T - dt.timedelta(days=7) - H]}
    got = judge_all(Settings(), rows, T, excluded)
    assert set(got) == {"kiosk", "flagship", "main", "new", "quiet"}
    for s, counts in stores.items():
        assert got[s] == judge(Settings(), counts, T, first[s], excluded.get(s, ()))
    assert [got[s].status for s in ("kiosk", "flagship", "main", "new", "quiet")] == [
        NOT_JUDGED, FIRING, OK, INSUFFICIENT_HISTORY, NOT_JUDGED]


def test_hours_before_first_seen_are_no_history_and_missing_rows_count_zero():
    counts = {h: c for h, c in history(10).items() if c}            # rows for hours with a count only
    assert judge(Settings(), counts, T, SINCE) == judge(Settings(), history(10), T, SINCE)
    short = {h: c for h, c in history(10).items() if h >= T - dt.timedelta(days=20)}
    # 20 days of rows but first seen 30 days ago: the 10 days without rows are zeros, not missing
    assert judge(Settings(), short, T, SINCE).expected < 18
    assert judge(Settings(), short, T, T - dt.timedelta(days=20)).expected == pytest.approx(20.0, rel=1e-12)


# --------------------------------------------------------------------------- settings and labels

@pytest.mark.parametrize("bad", [dict(season="hour_of_month"), dict(window=dt.timedelta(minutes=90)),
                                 dict(history=dt.timedelta(0)), dict(tail=0), dict(tail=0.5),
                                 dict(min_expected=0), dict(comparison="<=")])
def test_settings_refuse_what_the_model_cannot_do(bad):
    with pytest.raises(ValueError):
        Settings(**bad)


def test_seasons():
    tue = judge(Settings(season="hour_of_day"), history(10), T, SINCE)
    assert tue.label == "14:00–16:00" and tue.expected == pytest.approx(20.0, rel=1e-12)
    flat = judge(Settings(season="none"), history(10), T, SINCE)
    assert flat.label == "any 2 h" and flat.expected == pytest.approx(20.0, rel=1e-9)
    # a daily profile: hour_of_day learns it, none sees one level and a huge dispersion
    daily = history(lambda h: 30 if 12 <= h.hour < 16 else 0, window={1: 0})
    assert judge(Settings(season="hour_of_day"), daily, T, SINCE).status == FIRING
    none = judge(Settings(season="none"), daily, T, SINCE)
    assert none.expected == pytest.approx(15.0, rel=0.01) and none.status == OK


def test_labels():
    tue14 = dt.datetime(2026, 5, 19, 14, tzinfo=dt.UTC)
    assert hours_label("hour_of_week", tue14, tue14 + 2 * H) == "Tue 14:00–16:00"
    assert hours_label("hour_of_week", tue14 + 8 * H, tue14 + 10 * H) == "Tue 22:00–24:00"
    assert hours_label("hour_of_week", tue14 + 9 * H, tue14 + 11 * H) == "Tue 23:00–Wed 01:00"
    assert hours_label("hour_of_day", tue14, tue14 + H) == "14:00–15:00"
    assert hours_label("none", tue14, tue14 + 3 * H) == "any 3 h"


# --------------------------------------------------------------------------- the distribution

@pytest.mark.parametrize("k,r,p", [(0, 2.0, 0.45), (6, 49.77, 0.713), (20, 5.0, 0.2), (150, 30.0, 0.2),
                                   (5, 1000.0, 0.99), (3, 0.4, 0.05)])
def test_the_negative_binomial_against_its_sum(k, r, p):
    assert nbinom_cdf(np.array([k]), np.array([r]), np.array([p]))[0] == pytest.approx(cdf(k, r, p), rel=1e-10)
    assert nbinom_sf(np.array([k]), np.array([r]), np.array([p]))[0] == pytest.approx(1 - cdf(k, r, p), rel=1e-8)
    mean, var = r * (1 - p) / p, r * (1 - p) / p ** 2
    for q in (0.05, 0.5, 0.95):
        assert nbinom_ppf(np.array([q]), np.array([r]), np.array([p]), np.array([mean]), np.array([var]))[0] == \
            quantile(q, r, p)


def test_one_hour_without_over_dispersion_is_the_gamma_posteriors_predictive():
    a, b = 37.0, 4.5                                   # posterior Gamma(a, b): predictive NB(a, b / (1 + b))
    r, p = nbinom_params(np.array(a / b), np.array(a / b + a / b ** 2))
    assert float(r) == pytest.approx(a) and float(p) == pytest.approx(b / (1 + b))


def test_the_far_upper_tail_keeps_its_precision():
    tiny = nbinom_sf(np.array([200]), np.array([20.0]), np.array([0.5]))[0]
    assert 0 < tiny < 1e-30
    assert betainc(np.array([2.0]), np.array([3.0]), np.array([0.0, 1.0])).tolist() == [0.0, 1.0]
