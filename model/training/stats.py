"""Small statistics for accuracy and timing claims: mean, std, Student-t confidence intervals
and Welch's t-test. Self-contained (no scipy): the t distribution's CDF via the regularised
incomplete beta function (continued fraction), its quantile by bisection."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1 - math.exp(lbeta) * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (bisection on t_cdf)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


@dataclass
class Summary:
    n: int
    mean: float
    std: float
    ci95: float  # half-width of the 95% confidence interval of the mean
    min: float
    median: float
    max: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def summarize(xs: Sequence[float]) -> Summary:
    xs = [float(x) for x in xs]
    n = len(xs)
    if n == 0:
        raise ValueError("summarize: no values")
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    ci = t_ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    s = sorted(xs)
    med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return Summary(n, mean, std, ci, s[0], med, s[-1])


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test: (t, degrees of freedom, two-sided p-value)."""
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        raise ValueError("Welch's t-test needs at least 2 values per group")
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    if va + vb == 0:
        return (0.0 if sa.mean == sb.mean else math.copysign(math.inf, sa.mean - sb.mean)), math.inf, \
            (1.0 if sa.mean == sb.mean else 0.0)
    t = (sa.mean - sb.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    p = 2 * (1 - t_cdf(abs(t), df))
    return t, df, p


def runs_needed(a: Sequence[float], b: Sequence[float], power: float = 0.8, alpha: float = 0.05,
                limit: int = 10_000) -> int | None:
    """Runs per side that a two-sided t-test at ``alpha`` needs to detect the observed difference of
    means with probability ``power``, assuming the pooled spread observed here: the smallest n with
    |d| / (s * sqrt(2 / n)) >= t(1 - alpha/2, 2n - 2) + t(power, 2n - 2). None when the samples show
    no difference or no spread (nothing to size), or when more than ``limit`` runs would be needed."""
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        return None
    d = abs(sb.mean - sa.mean)
    s = math.sqrt(((sa.n - 1) * sa.std ** 2 + (sb.n - 1) * sb.std ** 2) / (sa.n + sb.n - 2))
    if d == 0 or s == 0:
        return None
    for n in range(2, limit + 1):
        df = 2 * n - 2
        if d / (s * math.sqrt(2 / n)) >= t_ppf(1 - alpha / 2, df) + t_ppf(power, df):
            return n
    return None
