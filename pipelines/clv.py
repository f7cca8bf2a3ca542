"""Customer lifetime value (SPEC §6.1): BG/NBD + Gamma-Gamma by maximum likelihood. Pure (no Dagster/DuckDB).

Pipeline: `rfm_summary` (Polars) turns delivered orders into one row per customer (x, t_x, T, monetary
value); `fit_bgnbd` and `fit_gamma_gamma` (scipy) estimate the population parameters; `predict` (numpy,
vectorized over all customers) gives expected purchases, P(alive), expected spend and CLV over the horizon;
`fit_clv` does all of it from a rules object and returns a `ClvResult`.

Per-customer columns (`ClvResult.customers`, meant for `core.clv_customers`): customer_id, orders, revenue
(Σ net_amount_reporting, Decimal), purchase_days, frequency_x, recency_t_x, age_T (the papers' x, t_x, T, in
time units of `clv.time_unit_days` days), monetary_value, first_order_at, last_order_at, then the predictions
predicted_purchases, p_alive, expected_avg_spend, clv. Params (`ClvResult.params`, for `core.clv_model_params`):
model (`bg_nbd` | `gamma_gamma`), parameter, value, customers_used, log_likelihood, converged, as_of.

Models
- BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a customer buys at
  a Poisson rate λ ~ Gamma(r, α); after each purchase they drop out with probability p ~ Beta(a, b).
  Likelihood of (x, t_x, T):
      L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / Γ(r) · [(α+T)^-(r+x) + 1{x>0} · a/(b+x−1) · (α+t_x)^-(r+x)].
- Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013, "The Gamma-Gamma model of
  monetary value"): the values of a customer's purchases are Gamma(p, ν) with ν ~ Gamma(q, γ); the density
  of the mean m of x purchases is  Γ(px+q)/(Γ(px)Γ(q)) · γ^q · m^(px−1) · x^px / (γ + m x)^(px+q).
  The SPEC's γ is `v` here.
- Fitting: L-BFGS-B with analytic gradients on the logs of the parameters (all must be positive), bounded
  to [e^-20, e^20]. While fitting, BG/NBD times are rescaled so that the largest T is 1 and Gamma-Gamma
  values so that their geometric mean is 1 (only α, resp. v, depends on the scale), which keeps both
  problems well conditioned whatever the time unit or currency. Log-likelihoods are reported in the original
  units (the CDNOW sample gives the published BG/NBD −9582.4).
- Expected purchases in (T, T+t], the conditional expectation of the BG/NBD paper:
      E = G / D,   G = (a+b+x−1)/(a−1) · [1 − S],   D = 1 + 1{x>0} · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x),
      S = (1−z)^(r+x) · 2F1(r+x, b+x; a+b+x−1; z) = (1−z)^(a−1) · 2F1(a+b−1−r, a−1; a+b+x−1; z),
  z = t/(α+T+t). The first S is lifetimes'; the second (Euler's transformation) is tried first, as its upper
  parameters do not grow with x; the first where the second overflows (a very large a). G is also
  E[(1 − (1+p·t/(α+T))^−(r+x)) / p] over p ~ Beta(a, b+x) (the posterior given alive, integrated over λ):
  the last resort, by Gauss-Hermite quadrature in logit(p), where neither 2F1 is finite (a and b+x huge).
  Removable singularities are interpolated across: a = 1 (0/0) and r − a an integer, where scipy's hyp2f1
  is in its degenerate c − A − B ∈ ℤ case and returns NaN or, near z = 1, finite garbage. D is computed in
  logs; a D that overflows gives E = 0 and P(alive) = 0, their limits. G was checked against mpmath (50
  digits) on ~11,000 random (r, a, b, x, z), a, b, r in [e^-4, e^5], x ≤ 5000, z in [1e-5, 1 − 1e-5], r − a
  an integer or a ≈ 1 in a quarter of them: relative error < 2e-7, except < 2e-4 on values below 1e-5 when
  a is within 1e-4 of 1 (cancellation in 1 − S); and on the a, b ∈ [1e2, 1e7] ridge against adaptive
  quadrature: < 2e-6.
- P(alive) = 1 / D (1 for x = 0).
- Expected average spend (Gamma-Gamma conditional mean) = p (γ + x m) / (p x + q − 1) for x > 0; for x = 0 the
  population mean p γ / (q − 1). A repeat buyer whose mean repeat value is ≤ 0 (free orders) is fitted out but
  predicted with m = 0, i.e. the population prior shrunk by their x purchases.
- CLV over the horizon = expected purchases × expected average spend: UNDISCOUNTED revenue (net of discounts,
  reporting currency), no margin applied, over `clv.horizon_units` time units after the as-of date.

Decisions where the SPEC is silent
- Orders on the as-of date count (the date covers the whole day); later orders are ignored. Times are
  whole days between calendar dates (UTC), divided by `time_unit_days`: T = (as_of − first purchase-day) /
  unit, so a first purchase on the as-of date has T = 0. This is what reproduces the CDNOW figures.
- `monetary_value` is null when x = 0 (there is no repeat purchase to average); null amounts count as 0.
- Degenerate data never raises: empty input, fewer than two customers, no repeat buyer (the BG/NBD maximum
  does not exist), a fit that does not converge or runs to a bound, or non-finite parameters give null
  BG/NBD predictions (and so null CLV); no usable repeat buyer for Gamma-Gamma (fewer than two with a positive
  mean value, e.g. all-zero spend), a failed Gamma-Gamma fit or q ≤ 1 (the population mean spend is infinite)
  give null expected spend and CLV. Each case is a `ClvWarning` (a `UserWarning`) and a line in
  `ClvResult.warnings`. A converged fit whose shape parameters (r, a, b; p, q) exceed 1e5 is also warned
  about but kept: the data show no spread across customers (same dropout probability, same mean spend...)
  and the likelihood only approaches its supremum as they grow; the predictions are those of that limit.
  With a and b (BG/NBD) or p and q (Gamma-Gamma) both above 1e5 the fit is that limit wherever the
  optimizer stopped, on the e^20 bound or below it, "converged" or not: where it stops there depends on
  rounding, and so differed between machines.
  The params frame lists both models whenever there is a customer: a model that was not
  fitted has null values and log-likelihood and converged = false (a q ≤ 1 fit keeps its values: it did
  converge, it is just unusable for spend); for empty input the frame has no rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import polars as pl
from scipy import optimize, special

from pipelines.rules import ClvRules, Rules

__all__ = [
    "ClvResult",
    "ClvWarning",
    "FitResult",
    "bgnbd_expected_purchases",
    "bgnbd_log_likelihood",
    "bgnbd_p_alive",
    "fit_bgnbd",
    "fit_clv",
    "fit_gamma_gamma",
    "gamma_gamma_expected_spend",
    "gamma_gamma_log_likelihood",
    "predict",
    "rfm_summary",
]

BGNBD = "bg_nbd"
GAMMA_GAMMA = "gamma_gamma"
BGNBD_PARAMS = ("r", "alpha", "a", "b")
GAMMA_GAMMA_PARAMS = ("p", "q", "v")
_LOG_BOUND = 20.0  # parameters live in [e^-20, e^20]; an optimum on that edge is a degenerate fit
_MIN_CUSTOMERS = 2
_RIDGE = 1e5  # a shape parameter above this: the fit is heading for a homogeneous limit (warned, kept)
_GRADIENT_TOLERANCE = 1e-4  # |∂ mean log-likelihood per customer / ∂ log-parameter|, see _maximize

SUMMARY_MODEL_COLUMNS = ("frequency_x", "recency_t_x", "age_T")  # x, t_x, T of the papers
PREDICTION_COLUMNS = ("predicted_purchases", "p_alive", "expected_avg_spend", "clv")


class ClvWarning(UserWarning):
    """Degenerate data or a failed fit: some predictions are null. The message says which and why."""


@dataclass(frozen=True)
class FitResult:
    """One fitted model. `params` in the original time unit; `log_likelihood` at those params."""

    model: str
    params: dict[str, float]
    log_likelihood: float
    customers_used: int
    converged: bool
    message: str = ""


@dataclass(frozen=True)
class ClvResult:
    """`customers`: one row per customer (summary + predictions); `params`: model × parameter rows."""

    customers: pl.DataFrame
    params: pl.DataFrame
    warnings: list[str] = field(default_factory=list)
    bgnbd: FitResult | None = None
    gamma_gamma: FitResult | None = None


# --------------------------------------------------------------------------------------------------- summary


def rfm_summary(transactions: pl.DataFrame, as_of: date, time_unit_days: int) -> pl.DataFrame:
    """One row per customer from delivered orders (customer_id, placed_at, net_amount_reporting).

    A purchase is a customer-day: the orders of one customer on one (UTC) day are one purchase, their
    `net_amount_reporting` summed. Orders after `as_of` are ignored. Columns: customer_id, orders, revenue,
    purchase_days, frequency_x (x: purchase-days after the first), recency_t_x (t_x: first → last
    purchase-day), age_T (T: first purchase-day → as_of), both in units of `time_unit_days` days,
    monetary_value (mean net value of the repeat purchase-days, the first excluded; null when x = 0),
    first_order_at, last_order_at. Sorted by customer_id.
    """
    if time_unit_days <= 0:
        raise ValueError(f"time_unit_days must be positive, got {time_unit_days}")
    required = ("customer_id", "placed_at", "net_amount_reporting")
    missing = [c for c in required if c not in transactions.columns]
    if missing:
        raise ValueError(f"transactions lack column(s) {', '.join(missing)}")
    as_of = _as_date(as_of)
    unit = float(time_unit_days)

    placed = pl.col("placed_at")
    placed_dtype = transactions.schema["placed_at"]
    if isinstance(placed_dtype, pl.Datetime) and placed_dtype.time_zone is not None:
        placed = placed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    elif placed_dtype == pl.Date:
        placed = placed.cast(pl.Datetime("us"))
    orders = (
        transactions.lazy()
        .select(
            pl.col("customer_id"),
            placed.cast(pl.Datetime("us")).alias("placed_at"),
            pl.col("net_amount_reporting").alias("amount"),
        )
        .filter(pl.col("customer_id").is_not_null() & pl.col("placed_at").is_not_null())
        .with_columns(pl.col("placed_at").dt.date().alias("day"))
        .filter(pl.col("day") <= as_of)
    )
    days = orders.group_by("customer_id", "day").agg(
        pl.len().alias("orders"),
        pl.col("amount").fill_null(0).sum().alias("amount"),
        pl.col("placed_at").min().alias("first_order_at"),
        pl.col("placed_at").max().alias("last_order_at"),
    )
    first_day = pl.col("day").min()
    summary = (
        days.group_by("customer_id")
        .agg(
            pl.col("orders").sum().cast(pl.UInt32),
            pl.col("amount").sum().alias("revenue"),
            pl.len().cast(pl.UInt32).alias("purchase_days"),
            ((pl.col("day").max() - first_day).dt.total_days() / unit).alias("recency_t_x"),
            ((pl.lit(as_of, dtype=pl.Date) - first_day).dt.total_days() / unit).alias("age_T"),
            # The repeat purchase-days are every day but the first (one row per day): their amount is the
            # total less the first day's, in exact decimals, divided once (the same bits whatever order the
            # days come in). Not a `filter` on `day != min(day)` in the aggregation: Polars evaluates that
            # group by group (10M orders' 8.7M delivered: this summary took 11.6 s, now 5.9 s).
            (pl.col("amount").sum() - pl.col("amount").min_by("day")).alias("repeat_amount"),
            (pl.len() - 1).alias("repeat_days"),
            pl.col("first_order_at").min(),
            pl.col("last_order_at").max(),
        )
        .with_columns(
            (pl.col("purchase_days").cast(pl.Int64) - 1).alias("frequency_x"),
            pl.when(pl.col("repeat_days") > 0)
            .then(pl.col("repeat_amount").cast(pl.Float64) / pl.col("repeat_days"))
            .alias("monetary_value"),
        )
        .select(
            "customer_id",
            "orders",
            "revenue",
            "purchase_days",
            "frequency_x",
            pl.col("recency_t_x").cast(pl.Float64),
            pl.col("age_T").cast(pl.Float64),
            pl.col("monetary_value").cast(pl.Float64),
            "first_order_at",
            "last_order_at",
        )
        .sort("customer_id")
    )
    return summary.collect()


# --------------------------------------------------------------------------------------------------- BG/NBD


@dataclass(frozen=True)
class Levels:
    """The distinct purchase counts x of a fit's rows (a few hundred at most, for up to millions of rows), each
    row's position among them and, for Gamma-Gamma, log m of each row: what the likelihood's terms need that
    does not change while the optimizer evaluates them tens of times."""

    values: np.ndarray
    index: np.ndarray
    log_m: np.ndarray | None = None

    @classmethod
    def of(cls, x: np.ndarray, log_m: np.ndarray | None = None) -> Levels:
        values, index = np.unique(x, return_inverse=True)
        return cls(values, index, log_m)


def bgnbd_log_likelihood(
    params: dict[str, float] | tuple[float, float, float, float],
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005)."""
    r, alpha, a, b = _bgnbd_tuple(params)
    ll, _ = _bgnbd_ll_grad(np.array([r, alpha, a, b]), *_arrays(x, t_x, T), gradient=False)
    return ll


def _bgnbd_ll_grad(
    theta: np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    *,
    gradient: bool = True,
    levels: Levels | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-customer log-likelihood and, if asked, its gradient w.r.t. (r, alpha, a, b) (shape n × 4).

    The terms of x alone (gamma, beta and digamma functions of r + x, b + x, a + b + x) are computed once per
    distinct x (`levels`, found once per fit) and gathered; each value is the one a per-customer computation
    gives, summed in the same order, so the result is the same to the last bit.
    """
    r, alpha, a, b = theta
    levels = levels if levels is not None else Levels.of(x)
    ux, at = levels.values, levels.index
    repeat = x > 0
    rx = r + x
    bx1 = np.where(ux > 0, b + ux - 1.0, 1.0)[at]  # only used where x > 0
    log_aT = np.log(alpha + T)
    log_atx = np.log(alpha + t_x)
    a1 = (special.gammaln(r + ux) - special.gammaln(r) + r * math.log(alpha))[at]
    a2 = (special.betaln(a, b + ux) - special.betaln(a, b))[at]
    a3 = -rx * log_aT
    a4 = np.where(repeat, math.log(a) - np.log(bx1) - rx * log_atx, -np.inf)
    mix = np.logaddexp(a3, a4)
    ll = a1 + a2 + mix
    if not gradient:
        return ll, None
    w3 = np.exp(a3 - mix)
    w4 = np.where(repeat, np.exp(a4 - mix), 0.0)
    psi_abx = special.digamma(a + b + ux)
    psi_ab = special.digamma(a + b)
    d_r = (special.digamma(r + ux) - special.digamma(r) + math.log(alpha))[at] - w3 * log_aT - w4 * log_atx
    d_alpha = r / alpha - w3 * rx / (alpha + T) - w4 * rx / (alpha + t_x)
    d_a = (psi_ab - psi_abx)[at] + w4 / a
    d_b = (special.digamma(b + ux) - special.digamma(b) + psi_ab - psi_abx)[at] - w4 / bx1
    return ll, np.column_stack([d_r, d_alpha, d_a, d_b])


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> FitResult:
    """Maximum-likelihood BG/NBD. Raises nothing on degenerate data: check `converged` and `message`."""
    x, t_x, T = _arrays(x, t_x, T)
    n = len(x)
    if n < _MIN_CUSTOMERS or not (x > 0).any():  # x > 0 implies T ≥ t_x > 0
        reason = f"{n} customer(s)" if n < _MIN_CUSTOMERS else "no repeat buyer (every x = 0)"
        message = f"BG/NBD not fitted: {reason}; the maximum-likelihood estimate does not exist"
        return FitResult(BGNBD, dict.fromkeys(BGNBD_PARAMS, math.nan), math.nan, n, False, message)
    scale = float(T.max())
    (xs, ts, Ts), weights = _distinct_rows(x, t_x / scale, T / scale)
    levels = Levels.of(xs)

    def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
        theta = np.exp(phi)
        ll, grad = _bgnbd_ll_grad(theta, xs, ts, Ts, levels=levels)
        return -float(ll @ weights) / n, -((weights @ grad) * theta) / n

    phi, ok, message = _maximize(objective, np.zeros(4), ridge=(2, 3))  # a, b
    r, alpha_scaled, a, b = np.exp(phi)
    params = {"r": float(r), "alpha": float(alpha_scaled * scale), "a": float(a), "b": float(b)}
    ll = float(bgnbd_log_likelihood(params, x, t_x, T).sum())
    return _fit_result(BGNBD, params, ll, n, ok and math.isfinite(ll), message)


def bgnbd_expected_purchases(
    params: dict[str, float], t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] (Fader, Hardie & Lee 2005), vectorized."""
    r, alpha, a, b = _bgnbd_tuple(params)
    x, t_x, T = _arrays(x, t_x, T)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        given_alive = _given_alive(r, alpha, a, b, t, x, T)
        return given_alive / _bgnbd_denominator(r, alpha, a, b, x, t_x, T)


_A_ONE = 1e-5  # |a − 1| below this: interpolate between a = 1 ± 1e-5 (error ~1e-10)
_R_INTEGER = 1e-5  # r − a this close to an integer: interpolate between r at distance 1e-5 on either side
_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite.hermgauss(80)


def _given_alive(r: float, alpha: float, a: float, b: float, t: float, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """G = E[purchases in (T, T+t] | alive at T] = (a+b+x−1)/(a−1) · (1 − S), S as in `_survival`.

    Two removable singularities are interpolated across (G is smooth in both parameters): a = 1 (0/0) and
    r − a an integer, where c − A − B of both 2F1 forms is an integer and scipy's hyp2f1 returns NaN or,
    worse, finite garbage (up to 50 % off at z ≥ 0.999; error ~1e-16/distance nearby).
    """
    shift = r - a - round(r - a)
    if abs(shift) < _R_INTEGER and r - shift - _R_INTEGER > 0:
        below = _given_alive_off_one(r - shift - _R_INTEGER, alpha, a, b, t, x, T)
        above = _given_alive_off_one(r - shift + _R_INTEGER, alpha, a, b, t, x, T)
        return below + (above - below) * (shift + _R_INTEGER) / (2.0 * _R_INTEGER)
    return _given_alive_off_one(r, alpha, a, b, t, x, T)


def _given_alive_off_one(
    r: float, alpha: float, a: float, b: float, t: float, x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    if abs(a - 1.0) < _A_ONE:  # 0/0 at a = 1: interpolate between a = 1 ± _A_ONE
        below = _given_alive_hyp2f1(r, alpha, 1.0 - _A_ONE, b, t, x, T)
        above = _given_alive_hyp2f1(r, alpha, 1.0 + _A_ONE, b, t, x, T)
        return below + (above - below) * (a - (1.0 - _A_ONE)) / (2.0 * _A_ONE)
    return _given_alive_hyp2f1(r, alpha, a, b, t, x, T)


def _given_alive_hyp2f1(
    r: float, alpha: float, a: float, b: float, t: float, x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Via `_survival`; where that is not finite (a and b+x huge, seen only on the a, b → ∞ ridge of
    degenerate fits) G = E[(1 − (1 + p·u)^−(r+x)) / p], p ~ Beta(a, b+x), u = t/(α+T) (the posterior given
    alive, integrated over λ), by Gauss-Hermite quadrature in logit(p), accurate there."""
    z = t / (alpha + T + t)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        given = (a + b + x - 1.0) / (a - 1.0) * (1.0 - _survival(r, a, b, x, z))
        bad = ~np.isfinite(given)
        if bad.any():
            given[bad] = _given_alive_quadrature(r, a, b, x[bad], t / (alpha + T[bad]))
    return given


def _given_alive_quadrature(r: float, a: float, b: float, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """E[(1 − (1+p·u)^−(r+x)) / p], p ~ Beta(a, b+x): Gauss-Hermite in y = logit(p) around its mean."""
    shape_b = (b + x)[:, None]
    mean = special.digamma(a) - special.digamma(shape_b)  # E[logit p] and Var[logit p], exactly
    sd = np.sqrt(special.polygamma(1, a) + special.polygamma(1, shape_b))
    y = mean + math.sqrt(2.0) * sd * _HERMITE_NODES
    log_p, log_q = np.maximum(-np.logaddexp(0.0, -y), -700.0), -np.logaddexp(0.0, y)  # -700: no 1/0
    log_density = a * log_p + shape_b * log_q - special.betaln(a, shape_b)  # density of logit(p)
    log_weight = np.log(_HERMITE_WEIGHTS) + _HERMITE_NODES**2 + np.log(math.sqrt(2.0) * sd) + log_density
    k, u = (r + x)[:, None], u[:, None]
    integrand = -np.expm1(-k * np.log1p(np.exp(log_p) * u)) * np.exp(-log_p)
    return (np.exp(log_weight) * integrand).sum(axis=1)


def _survival(r: float, a: float, b: float, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """S = (1−z)^(r+x) · 2F1(r+x, b+x; c; z) = (1−z)^(a−1) · 2F1(a+b−1−r, a−1; c; z), c = a+b+x−1.

    The Euler form (right) first: its upper parameters do not grow with x, so it is fast and accurate for
    any x. The direct form (lifetimes' first choice) where that is not finite: a very large a, where
    a+b−1−r ≈ c ≫ 1 overflows.
    """
    c = a + b + x - 1.0
    survive = np.asarray((1.0 - z) ** (a - 1.0) * special.hyp2f1(a + b - 1.0 - r, a - 1.0, c, z), dtype=float)
    bad = ~np.isfinite(survive)
    if bad.any():
        xb, zb = x[bad], z[bad]
        survive[bad] = (1.0 - zb) ** (r + xb) * special.hyp2f1(r + xb, b + xb, c[bad], zb)
    return survive


def bgnbd_p_alive(params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P(still alive at T | x, t_x, T) (Fader, Hardie & Lee 2005; 2008 P(alive) note): 1 for x = 0."""
    r, alpha, a, b = _bgnbd_tuple(params)
    x, t_x, T = _arrays(x, t_x, T)
    with np.errstate(over="ignore"):
        return 1.0 / _bgnbd_denominator(r, alpha, a, b, x, t_x, T)


def _bgnbd_denominator(r, alpha, a, b, x, t_x, T) -> np.ndarray:
    repeat = x > 0
    bx1 = np.where(repeat, b + x - 1.0, 1.0)
    log_ratio = np.log(alpha + T) - np.log(alpha + t_x)
    log_odds = np.where(repeat, math.log(a) - np.log(bx1) + (r + x) * log_ratio, -np.inf)
    with np.errstate(over="ignore"):
        return 1.0 + np.exp(log_odds)


# ----------------------------------------------------------------------------------------------- Gamma-Gamma


def gamma_gamma_log_likelihood(
    params: dict[str, float] | tuple[float, float, float], x: np.ndarray, m: np.ndarray
) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood of the mean repeat value m of x > 0 purchases (m > 0)."""
    p, q, v = (params[k] for k in GAMMA_GAMMA_PARAMS) if isinstance(params, dict) else params
    ll, _ = _gg_ll_grad(np.array([p, q, v]), *_arrays(x, m), gradient=False)
    return ll


def _gg_ll_grad(
    theta: np.ndarray, x: np.ndarray, m: np.ndarray, *, gradient: bool = True, levels: Levels | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-customer log-likelihood and, if asked, its gradient w.r.t. (p, q, v) (shape n × 3); the terms of
    x alone once per distinct x, as in `_bgnbd_ll_grad` (the same values to the last bit)."""
    p, q, v = theta
    levels = levels if levels is not None else Levels.of(x)
    ux, at = levels.values, levels.index
    px = p * x
    log_m = levels.log_m if levels.log_m is not None else np.log(m)
    log_xm_v = np.log(x * m + v)
    ll = (
        (special.gammaln(p * ux + q) - special.gammaln(p * ux) - special.gammaln(q) + q * math.log(v))[at]
        + (px - 1.0) * log_m
        + (p * ux * np.log(ux))[at]
        - (px + q) * log_xm_v
    )
    if not gradient:
        return ll, None
    psi_pxq = special.digamma(p * ux + q)
    d_p = x * ((psi_pxq - special.digamma(p * ux))[at] + log_m + np.log(ux)[at] - log_xm_v)
    d_q = (psi_pxq - special.digamma(q) + math.log(v))[at] - log_xm_v
    d_v = q / v - (px + q) / (x * m + v)
    return ll, np.column_stack([d_p, d_q, d_v])


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray) -> FitResult:
    """Maximum-likelihood Gamma-Gamma on the customers with x > 0 and m > 0 (the others are left out)."""
    x, m = _arrays(x, m)
    usable = (x > 0) & np.isfinite(m) & (m > 0)
    x, m = x[usable], m[usable]
    n = len(x)
    if n < _MIN_CUSTOMERS:
        message = (
            f"Gamma-Gamma not fitted: {n} repeat buyer(s) with a positive mean repeat value "
            f"(at least {_MIN_CUSTOMERS} needed)"
        )
        nan_params = dict.fromkeys(GAMMA_GAMMA_PARAMS, math.nan)
        return FitResult(GAMMA_GAMMA, nan_params, math.nan, n, False, message)
    scale = float(np.exp(np.log(m).mean()))  # geometric mean: only v depends on the money scale
    ms = m / scale
    levels = Levels.of(x, log_m=np.log(ms))

    def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
        theta = np.exp(phi)
        ll, grad = _gg_ll_grad(theta, x, ms, levels=levels)
        return -float(ll.sum()) / n, -(grad.sum(axis=0) * theta) / n

    phi, ok, message = _maximize(objective, np.zeros(3), ridge=(0, 1))  # p, q
    p, q, v_scaled = np.exp(phi)
    params = {"p": float(p), "q": float(q), "v": float(v_scaled * scale)}
    ll = float(gamma_gamma_log_likelihood(params, x, m).sum())
    return _fit_result(GAMMA_GAMMA, params, ll, n, ok and math.isfinite(ll), message)


def gamma_gamma_expected_spend(params: dict[str, float], x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """E[average purchase value | x, m] = p(v + x m)/(p x + q − 1); population mean p v/(q − 1) if x = 0.

    A null/NaN or negative m of a repeat buyer is taken as 0. Needs q > 1 (NaN otherwise).
    """
    p, q, v = (params[k] for k in GAMMA_GAMMA_PARAMS)
    x, m = _arrays(x, m)
    if not q > 1.0:
        return np.full(len(x), np.nan)
    m = np.where((x > 0) & np.isfinite(m), np.maximum(m, 0.0), 0.0)
    return p * (v + x * m) / (p * x + q - 1.0)


# ---------------------------------------------------------------------------------------------- predictions


def predict(
    summary: pl.DataFrame,
    bgnbd: FitResult | None,
    gamma_gamma: FitResult | None,
    horizon_units: float,
) -> pl.DataFrame:
    """`summary` (from `rfm_summary`) + predicted_purchases, p_alive, expected_avg_spend, clv over horizon.

    A model passed as None or not converged gives nulls in its columns (and so in clv); so does any
    non-finite value.
    """
    x, t_x, T = _arrays(*(summary[c].to_numpy() for c in SUMMARY_MODEL_COLUMNS))
    m = summary["monetary_value"].cast(pl.Float64).fill_null(np.nan).to_numpy().astype(float)
    n = len(x)
    nan = np.full(n, np.nan)
    if bgnbd is not None and bgnbd.converged and n:
        purchases = bgnbd_expected_purchases(bgnbd.params, horizon_units, x, t_x, T)
        alive = bgnbd_p_alive(bgnbd.params, x, t_x, T)
    else:
        purchases, alive = nan, nan
    if gamma_gamma is not None and gamma_gamma.converged and n:
        spend = gamma_gamma_expected_spend(gamma_gamma.params, x, m)
    else:
        spend = nan
    clv = purchases * spend
    return summary.with_columns(
        pl.Series(name, values, dtype=pl.Float64, nan_to_null=True)
        for name, values in zip(PREDICTION_COLUMNS, (purchases, alive, spend, clv), strict=True)
    )


def fit_clv(transactions: pl.DataFrame, as_of: date, rules: Rules | ClvRules) -> ClvResult:
    """Summary, both fits and predictions over `clv.horizon_units`; never raises on degenerate data."""
    clv_rules = rules.clv if isinstance(rules, Rules) else rules
    as_of = _as_date(as_of)
    summary = rfm_summary(transactions, as_of, clv_rules.time_unit_days)
    messages: list[str] = []

    def warn(message: str) -> None:
        messages.append(message)
        warnings.warn(message, ClvWarning, stacklevel=3)

    x, t_x, T = _arrays(*(summary[c].to_numpy() for c in SUMMARY_MODEL_COLUMNS))
    m = summary["monetary_value"].fill_null(np.nan).to_numpy()
    if summary.is_empty():
        warn(f"CLV: no delivered orders up to {as_of}; nothing to fit")
        bg = gg = None
    else:
        bg = fit_bgnbd(x, t_x, T)
        if not bg.converged:
            warn(f"CLV: {bg.message}; predicted purchases, P(alive) and CLV are null")
        gg = fit_gamma_gamma(x, m)
        if not gg.converged:
            warn(f"CLV: {gg.message}; expected spend and CLV are null")
        elif not gg.params["q"] > 1.0:
            warn(
                f"CLV: Gamma-Gamma q = {gg.params['q']:.4g} ≤ 1: the population mean spend is infinite; "
                "expected spend and CLV are null"
            )
    for fit, parameters, what in ((bg, ("r", "a", "b"), "purchase rates or dropout"), (gg, ("p", "q"), "spend")):
        large = [k for k in parameters if fit is not None and fit.converged and fit.params[k] > _RIDGE]
        if large:
            values = ", ".join(f"{k} = {fit.params[k]:.3g}" for k in large)
            warn(
                f"CLV: {'BG/NBD' if fit.model == BGNBD else 'Gamma-Gamma'} {values}: the data show no spread "
                f"in {what} across customers, so the fit approaches its homogeneous limit; predictions are "
                "those of that limit"
            )
    customers = predict(summary, bg, gg, float(clv_rules.horizon_units))
    checks = {
        "predicted_purchases / p_alive": bg is not None and bg.converged,
        "expected_avg_spend": gg is not None and gg.converged and gg.params["q"] > 1.0,
    }
    for columns, fitted in checks.items():
        if fitted:
            names = columns.split(" / ")
            bad = customers.select(pl.any_horizontal(pl.col(c).is_null() for c in names).sum()).item()
            if bad:
                warn(f"CLV: {bad} customer(s) got a non-finite {columns}, stored as null")
    params = _params_frame([f for f in (bg, gg) if f is not None], as_of)
    return ClvResult(customers, params, messages, bg, gg)


# ------------------------------------------------------------------------------------------------- helpers


def _maximize(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    start: np.ndarray,
    ridge: tuple[int, int] | None = None,
) -> tuple[np.ndarray, bool, str]:
    """Minimize a (value, gradient) objective over log-parameters; ok = converged, finite, off the bounds.

    `ridge` names two shape parameters whose joint growth is the model's homogeneous limit (Gamma-Gamma p and q
    when every customer's spend is the same; BG/NBD a and b when every customer has the same dropout
    probability): there the likelihood only approaches its supremum, and where the optimizer stops on the way,
    below the upper bound or on it, and whether it calls that converged, depends on rounding (the same data
    stopped below the bound, converged, on one machine, and on it, "ABNORMAL", on another). Both large (above
    _RIDGE), the fit is that limit wherever it stopped: its predictions are the limit's (every customer's
    expected spend is the common spend, p v = (q - 1) m along the ridge).
    """
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(start)
    with np.errstate(all="ignore"):
        result = optimize.minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9},
        )
        phi = np.asarray(result.x, dtype=float)
        if not np.isfinite(result.fun) or not np.all(np.isfinite(phi)):
            return phi, False, "the fit gave non-finite values"
        at_bound = np.abs(phi) >= _LOG_BOUND - 1e-6
        on_ridge = ridge is not None and min(phi[ridge[0]], phi[ridge[1]]) > math.log(_RIDGE)
        if on_ridge:
            at_bound[list(ridge)] = False  # the homogeneous limit, reached or approached
        if np.any(at_bound):
            return phi, False, "a parameter ran to its bound (e^±20): the data do not identify the model"
        if on_ridge:
            return phi, True, "converged"
        gradient_norm = float(np.max(np.abs(objective(phi)[1])))
    # A line search that stalls where the gradient is ~0 has converged: this happens at an optimum reached to
    # rounding, and on the a, b → ∞ ridge (every customer has the same dropout probability a/(a+b)), where
    # the likelihood only approaches its supremum; the parameters found there predict like the limit model.
    if not (result.success or gradient_norm < _GRADIENT_TOLERANCE):
        return phi, False, f"the optimizer did not converge ({result.message})"
    return phi, True, "converged"


def _fit_result(model: str, params: dict[str, float], ll: float, n: int, ok: bool, message: str) -> FitResult:
    names = ", ".join(f"{k}={v:.4g}" for k, v in params.items())
    label = "BG/NBD" if model == BGNBD else "Gamma-Gamma"
    return FitResult(model, params, ll, n, ok, message if ok else f"{label} fit failed ({names}): {message}")


def _params_frame(fits: list[FitResult], as_of: date) -> pl.DataFrame:
    rows = [
        {
            "model": fit.model,
            "parameter": name,
            "value": value if math.isfinite(value) else None,
            "customers_used": fit.customers_used,
            "log_likelihood": fit.log_likelihood if math.isfinite(fit.log_likelihood) else None,
            "converged": fit.converged,
            "as_of": as_of,
        }
        for fit in fits
        for name, value in fit.params.items()
    ]
    schema = {
        "model": pl.String,
        "parameter": pl.String,
        "value": pl.Float64,
        "customers_used": pl.Int64,
        "log_likelihood": pl.Float64,
        "converged": pl.Boolean,
        "as_of": pl.Date,
    }
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _bgnbd_tuple(params) -> tuple[float, float, float, float]:
    if isinstance(params, dict):
        return tuple(float(params[k]) for k in BGNBD_PARAMS)  # type: ignore[return-value]
    return tuple(float(v) for v in params)  # type: ignore[return-value]


def _distinct_rows(*columns: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The distinct rows of `columns` and how often each occurs. A log-likelihood summed over customers is the
    same sum over their distinct (x, t_x, T), weighted: the BG/NBD fit evaluates it tens of times, and at 1M
    orders 233,357 customers have 117,703 distinct (x, t_x, T)."""
    names = [f"c{i}" for i in range(len(columns))]
    # np.unique(axis=0) gives the same rows in the same (lexicographic) order, but sorts them as opaque records:
    # 4.9 s for 2.35M customers where Polars groups and sorts them in 1.3 s.
    counted = (
        pl.DataFrame(dict(zip(names, columns, strict=True))).group_by(names).agg(pl.len().alias("rows")).sort(names)
    )
    return tuple(counted[n].to_numpy() for n in names), counted["rows"].to_numpy().astype(float)


def _arrays(*columns) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(c, dtype=float) for c in columns)


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value
