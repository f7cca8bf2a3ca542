"""Lifetime value model (SPEC §6.1): CDNOW reproduction, customer-day summary, predictions, degenerate data."""

from __future__ import annotations

import importlib.util
import math
import warnings
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import integrate, optimize, special

from pipelines import clv
from pipelines.rules import ClvRules, load_rules

WEEKLY = ClvRules(time_unit_days=7, horizon_units=52)
TX_SCHEMA = {"customer_id": pl.String, "placed_at": pl.Datetime("us"), "net_amount_reporting": pl.Decimal(18, 2)}


def transactions(rows: list[tuple[str, datetime, str | float | int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(c, at, Decimal(str(v))) for c, at, v in rows], schema=TX_SCHEMA, orient="row"
    )


def row(frame: pl.DataFrame, customer_id: str) -> dict:
    rows = frame.filter(pl.col("customer_id") == customer_id).to_dicts()
    assert len(rows) == 1
    return rows[0]


# ------------------------------------------------------------------------------------------------ CDNOW


def cdnow_sample_path() -> Path:
    """CDNOW_sample.txt from the `lifetimes` wheel (a dev dependency), found without importing lifetimes."""
    spec = importlib.util.find_spec("lifetimes")  # locates the package; does not execute it
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the dev dependency `lifetimes` is not installed (uv sync) : it ships the CDNOW sample")
    for location in spec.submodule_search_locations:
        path = Path(location) / "datasets" / "CDNOW_sample.txt"
        if path.is_file():
            return path
    pytest.fail("lifetimes/datasets/CDNOW_sample.txt not found")


@pytest.fixture(scope="module")
def cdnow() -> pl.DataFrame:
    # whitespace-separated: master customer id, sample customer id (1..2357), date YYYYMMDD, CDs, dollar value
    fields = [line.split() for line in cdnow_sample_path().read_text().splitlines() if line.strip()]
    assert {len(f) for f in fields} == {5}
    return pl.DataFrame(
        {
            "customer_id": [f[1] for f in fields],
            "placed_at": [datetime.strptime(f[2], "%Y%m%d") for f in fields],
            "net_amount_reporting": [Decimal(f[4]) for f in fields],
        },
        schema=TX_SCHEMA,
    )


@pytest.fixture(scope="module")
def cdnow_fit(cdnow: pl.DataFrame) -> clv.ClvResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error", clv.ClvWarning)  # the real data set must fit without a warning
        return clv.fit_clv(cdnow, date(1997, 9, 30), WEEKLY)


def test_cdnow_summary_matches_the_published_calibration_data(cdnow, cdnow_fit):
    """Hardie's own calibration summary of the sample (x, t_x, T, and zbar: the mean value of the repeat
    purchases) ships beside it in lifetimes: ours matches it for every customer, to its 2 decimals."""
    customers = cdnow_fit.customers
    assert cdnow["customer_id"].n_unique() == customers.height == 2357
    assert customers["frequency_x"].sum() == 2457
    assert (customers["frequency_x"] > 0).sum() == 946
    published = pl.read_csv(cdnow_sample_path().parent / "cdnow_customers_summary_with_transactions.csv")
    assert published.columns == ["ID", "x", "t_x", "T", "zbar"]
    joined = customers.with_columns(pl.col("customer_id").cast(pl.Int64)).join(
        published, left_on="customer_id", right_on="ID", how="full"
    )
    assert joined.height == 2357 and joined["customer_id"].null_count() == joined["ID"].null_count() == 0
    assert (joined["frequency_x"] == joined["x"]).all()
    for ours, theirs in (("recency_t_x", "t_x"), ("age_T", "T"), ("monetary_value", "zbar")):
        difference = (joined[ours].fill_null(0.0) - joined[theirs]).abs()  # zbar = 0 when x = 0
        assert difference.max() <= 0.005 + 1e-9, ours


@pytest.mark.parametrize(
    ("model", "parameter", "published"),
    [
        ("bg_nbd", "r", 0.243),
        ("bg_nbd", "alpha", 4.414),
        ("bg_nbd", "a", 0.793),
        ("bg_nbd", "b", 2.426),
        ("gamma_gamma", "p", 6.25),
        ("gamma_gamma", "q", 3.74),
        ("gamma_gamma", "v", 15.44),
    ],
)
def test_cdnow_reproduces_published_estimates(cdnow_fit, model, parameter, published):
    fitted = cdnow_fit.params.filter((pl.col("model") == model) & (pl.col("parameter") == parameter))
    assert fitted.height == 1
    assert fitted["value"].item() == pytest.approx(published, rel=0.01)
    assert fitted["converged"].item() is True


def test_cdnow_params_frame(cdnow_fit):
    params = cdnow_fit.params
    assert params.columns == [
        "model", "parameter", "value", "customers_used", "log_likelihood", "converged", "as_of",
    ]
    assert params["as_of"].unique().to_list() == [date(1997, 9, 30)]
    by_model = {m: frame for (m,), frame in params.group_by("model")}
    assert by_model["bg_nbd"]["parameter"].to_list() == ["r", "alpha", "a", "b"]
    assert by_model["gamma_gamma"]["parameter"].to_list() == ["p", "q", "v"]
    assert by_model["bg_nbd"]["customers_used"].unique().to_list() == [2357]
    assert by_model["gamma_gamma"]["customers_used"].unique().to_list() == [946]
    # the published BG/NBD log-likelihood (Fader, Hardie & Lee 2005)
    assert by_model["bg_nbd"]["log_likelihood"].unique().item() == pytest.approx(-9582.4, abs=0.1)
    assert cdnow_fit.warnings == []


def test_cdnow_predictions(cdnow_fit):
    customers = cdnow_fit.customers
    bg, gg = cdnow_fit.bgnbd.params, cdnow_fit.gamma_gamma.params
    # the worked example of the BG/NBD paper: x = 2, t_x = 30.43, T = 38.86 → 1.226 purchases in 39 weeks
    example = clv.bgnbd_expected_purchases(bg, 39, np.array([2.0]), np.array([30.43]), np.array([38.86]))
    assert example[0] == pytest.approx(1.226, abs=0.001)

    assert customers.select(pl.col(c).is_null().sum() for c in clv.PREDICTION_COLUMNS).row(0) == (0, 0, 0, 0)
    assert (customers["p_alive"].is_between(0, 1)).all()
    assert (customers["predicted_purchases"] >= 0).all()
    one_timers = customers.filter(pl.col("frequency_x") == 0)
    assert (one_timers["p_alive"] == 1.0).all()
    population_mean = gg["p"] * gg["v"] / (gg["q"] - 1)
    assert one_timers["expected_avg_spend"].to_numpy() == pytest.approx(population_mean)
    assert customers["clv"].to_numpy() == pytest.approx(
        (customers["predicted_purchases"] * customers["expected_avg_spend"]).to_numpy()
    )
    # horizon = 52 weeks
    x, t_x, T = (customers[c].to_numpy().astype(float) for c in clv.SUMMARY_MODEL_COLUMNS)
    assert customers["predicted_purchases"].to_numpy() == pytest.approx(
        clv.bgnbd_expected_purchases(bg, 52, x, t_x, T)
    )


def test_monetary_value_definition_matters(cdnow):
    """SPEC: the mean of the repeat purchase-days, first excluded. Including the first day does not reproduce."""
    summary = clv.rfm_summary(cdnow, date(1997, 9, 30), 7)
    day_values = (
        cdnow.filter(pl.col("placed_at") <= datetime(1997, 9, 30))
        .group_by("customer_id", "placed_at")
        .agg(pl.col("net_amount_reporting").cast(pl.Float64).sum())
        .group_by("customer_id")
        .agg(pl.col("net_amount_reporting").mean().alias("mean_all_days"))
    )
    joined = summary.join(day_values, on="customer_id")
    including_first = clv.fit_gamma_gamma(joined["frequency_x"].to_numpy(), joined["mean_all_days"].to_numpy())
    assert including_first.params["p"] == pytest.approx(14.34, rel=0.01)  # not the published 6.25


# ------------------------------------------------------------------------------------------------ summary


def test_customer_day_aggregation():
    tx = transactions(
        [
            ("a", datetime(2024, 1, 1, 9), "10.00"),
            ("a", datetime(2024, 1, 1, 21, 30), "5.50"),  # same day: one purchase, 15.50
            ("a", datetime(2024, 1, 15, 12), "20.00"),
            ("a", datetime(2024, 1, 15, 13), "4.00"),  # same day: one purchase, 24.00
            ("a", datetime(2024, 1, 29), "30.00"),
            ("a", datetime(2024, 3, 1), "99.00"),  # after the as-of date: ignored
            ("b", datetime(2024, 2, 26, 23, 59), "7.00"),  # on the as-of date: counts, T = 0
            ("c", datetime(2024, 1, 8), "3.00"),
            ("c", datetime(2024, 1, 8, 1), "4.00"),  # two orders, one purchase-day
        ]
    )
    summary = clv.rfm_summary(tx, date(2024, 2, 26), 7)
    assert summary["customer_id"].to_list() == ["a", "b", "c"]
    a = row(summary, "a")
    assert (a["orders"], a["purchase_days"], a["frequency_x"]) == (5, 3, 2)
    assert a["revenue"] == Decimal("69.50")
    assert a["recency_t_x"] == pytest.approx(4.0)  # 28 days
    assert a["age_T"] == pytest.approx(8.0)  # 56 days
    assert a["monetary_value"] == pytest.approx((24.00 + 30.00) / 2)  # repeat days only, first excluded
    assert (a["first_order_at"], a["last_order_at"]) == (datetime(2024, 1, 1, 9), datetime(2024, 1, 29))
    b = row(summary, "b")
    assert (b["frequency_x"], b["recency_t_x"], b["age_T"], b["monetary_value"]) == (0, 0.0, 0.0, None)
    c = row(summary, "c")
    assert (c["orders"], c["purchase_days"], c["frequency_x"], c["monetary_value"]) == (2, 1, 0, None)
    assert c["revenue"] == Decimal("7.00")
    assert c["age_T"] == pytest.approx(7.0)
    # daily time unit
    daily = clv.rfm_summary(tx, date(2024, 2, 26), 1)
    assert (row(daily, "a")["recency_t_x"], row(daily, "a")["age_T"]) == (28.0, 56.0)


def test_summary_days_are_utc_days():
    aware = pl.DataFrame(
        {
            "customer_id": ["a", "a"],
            # 23:30 and 00:30 in UTC+2 are 21:30 and 22:30 UTC of the same day: one purchase
            "placed_at": [
                datetime(2024, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=2))),
                datetime(2024, 5, 2, 0, 30, tzinfo=timezone(timedelta(hours=2))),
            ],
            "net_amount_reporting": [Decimal("1.00"), Decimal("2.00")],
        }
    )
    summary = clv.rfm_summary(aware, date(2024, 5, 31), 7)
    assert (summary["purchase_days"].item(), summary["orders"].item()) == (1, 2)
    assert summary["first_order_at"].item() == datetime(2024, 5, 1, 21, 30)


def test_summary_of_empty_input_keeps_the_schema():
    summary = clv.rfm_summary(transactions([]), date(2024, 1, 1), 7)
    assert summary.is_empty()
    assert summary.columns == [
        "customer_id", "orders", "revenue", "purchase_days", "frequency_x", "recency_t_x", "age_T", "monetary_value",
        "first_order_at", "last_order_at",
    ]


def test_summary_rejects_missing_columns():
    with pytest.raises(ValueError, match="net_amount_reporting"):
        clv.rfm_summary(pl.DataFrame({"customer_id": ["a"], "placed_at": [datetime(2024, 1, 1)]}), date.today(), 7)


# -------------------------------------------------------------------------------------------- the formulas


def _lifetimes_expected_purchases(params, t, x, t_x, T):
    """The lifetimes (0.11) formula, direct 2F1 with its Euler fallback, as an independent reference."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    _a, _b, _c, _z = r + x, b + x, a + b + x - 1, t / (alpha + T + t)
    with np.errstate(all="ignore"):
        ln_hyp = np.log(special.hyp2f1(_a, _b, _c, _z))
        ln_alt = np.log(special.hyp2f1(_c - _a, _c - _b, _c, _z)) + (_c - _a - _b) * np.log(1 - _z)
        ln_hyp = np.where(np.isinf(ln_hyp), ln_alt, ln_hyp)
        numerator = (a + b + x - 1) / (a - 1) * (1 - np.exp(ln_hyp + (r + x) * np.log((alpha + T) / (alpha + t + T))))
        return numerator / (1 + (x > 0) * (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x))


def _integral_expected_purchases(params, t, x, t_x, T):
    """E = P(alive) · ∫ (1 − ((α+T)/(α+T+pt))^(r+x)) / p · Beta(p; a, b+x) dp: the posterior given alive,
    integrated over λ. An independent route (no hypergeometric); reliable for moderate a and b."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    alive = clv.bgnbd_p_alive(params, np.array([x]), np.array([t_x]), np.array([T]))[0]

    def integrand(p):
        density = math.exp((a - 1) * math.log(p) + (b + x - 1) * math.log1p(-p) - special.betaln(a, b + x))
        return -math.expm1(-(r + x) * math.log1p(p * t / (alpha + T))) / p * density

    value, _ = integrate.quad(integrand, 0, 1, limit=200, epsabs=1e-13, epsrel=1e-11)
    return alive * value


PARAM_SETS = [
    {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},  # CDNOW
    {"r": 1.3, "alpha": 20.0, "a": 2.5, "b": 6.0},
    {"r": 1.5, "alpha": 20.0, "a": 2.5, "b": 6.0},  # r − a integer: scipy's hyp2f1 fails near z = 1
    {"r": 3.0, "alpha": 1.0, "a": 1.0, "b": 4.0},  # a = 1 exactly: the formula's 0/0
    {"r": 0.8, "alpha": 0.05, "a": 1.0 + 3e-6, "b": 0.9},  # a ≈ 1, and z close to 1 (α small)
]
CUSTOMERS = [(0, 0.0, 30.0), (1, 5.0, 40.0), (4, 35.0, 39.0), (12, 70.0, 78.0), (40, 1.0, 1.5), (0, 0.0, 0.0)]


@pytest.mark.parametrize("params", PARAM_SETS)
@pytest.mark.parametrize(("x", "t_x", "T"), CUSTOMERS)
@pytest.mark.parametrize("horizon", [52.0, 5200.0])
def test_expected_purchases_matches_the_integral(params, x, t_x, T, horizon):
    expected = _integral_expected_purchases(params, horizon, x, t_x, T)
    got = clv.bgnbd_expected_purchases(params, horizon, np.array([x]), np.array([t_x]), np.array([T]))[0]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("params", PARAM_SETS[:2])
def test_expected_purchases_matches_the_lifetimes_formula(params):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 200, 500).astype(float)
    T = rng.uniform(0, 200, 500)
    t_x = np.where(x > 0, T * rng.uniform(0, 1, 500), 0.0)
    for horizon in (1.0, 52.0, 520.0):
        reference = _lifetimes_expected_purchases(params, horizon, x, t_x, T)
        got = clv.bgnbd_expected_purchases(params, horizon, x, t_x, T)
        assert np.isfinite(reference).all()
        assert got == pytest.approx(reference, rel=1e-8, abs=1e-12)


def test_expected_purchases_where_lifetimes_fails():
    """r − a = −1: lifetimes' formula gives NaN at long horizons; ours still matches the integral."""
    params = PARAM_SETS[2]
    x, t_x, T = np.array([166.0, 0.0, 3.0]), np.array([0.85, 0.0, 1.0]), np.array([16.3, 2.0, 4.0])
    assert np.isnan(_lifetimes_expected_purchases(params, 520.0, x, t_x, T)).any()
    got = clv.bgnbd_expected_purchases(params, 520.0, x, t_x, T)
    for i in range(3):
        assert got[i] == pytest.approx(_integral_expected_purchases(params, 520.0, x[i], t_x[i], T[i]), rel=1e-6)


@pytest.mark.parametrize("scale", [5e4, 3e6])
def test_expected_purchases_on_the_ridge_of_huge_a_and_b(scale):
    """a, b → ∞ (every customer drops out with the same p = a/(a+b)): where both 2F1 forms overflow or fail
    (large x) the quadrature takes over; all of it approaches the fixed-p limit E = P(alive)·h(p̄)."""
    r, alpha, a, b = 1.2, 6.0, 0.4 * scale, 0.6 * scale
    params = {"r": r, "alpha": alpha, "a": a, "b": b}
    x = np.array([0.0, 1.0, 10.0, 300.0, 1000.0, 3000.0])
    T = np.full(6, 30.0)
    t_x = np.where(x > 0, 29.0, 0.0)
    got = clv.bgnbd_expected_purchases(params, 52.0, x, t_x, T)
    assert np.isfinite(got).all()
    p_bar = a / (a + b + x)
    u = 52.0 / (alpha + T)
    limit = clv.bgnbd_p_alive(params, x, t_x, T) * -np.expm1(-(r + x) * np.log1p(p_bar * u)) / p_bar
    assert got == pytest.approx(limit, rel=50 / scale)


def test_quadrature_fallback_agrees_with_hyp2f1():
    r, a, b = 0.9, 300.0, 500.0
    x = np.array([0.0, 2.0, 20.0, 200.0])
    u = np.array([0.5, 3.0, 20.0, 1.0])
    via_hyp2f1 = clv._given_alive(r, 1.0, a, b, 1.0, x, 1.0 / u - 1.0)  # u = t/(α+T) with t = α = 1
    assert clv._given_alive_quadrature(r, a, b, x, u) == pytest.approx(via_hyp2f1, rel=1e-9)


def test_expected_purchases_far_past_the_last_purchase_is_zero_not_nan():
    params = PARAM_SETS[0]
    got = clv.bgnbd_expected_purchases(params, 52.0, np.array([5000.0]), np.array([1.0]), np.array([500.0]))
    alive = clv.bgnbd_p_alive(params, np.array([5000.0]), np.array([1.0]), np.array([500.0]))
    assert (got[0], alive[0]) == (0.0, 0.0)


def test_p_alive():
    params = PARAM_SETS[0]
    x, t_x, T = np.array([0.0, 2.0, 2.0]), np.array([0.0, 30.43, 5.0]), np.array([38.86, 38.86, 38.86])
    alive = clv.bgnbd_p_alive(params, x, t_x, T)
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    assert alive[0] == 1.0
    assert alive[1] == pytest.approx(1 / (1 + a / (b + 1) * ((alpha + 38.86) / (alpha + 30.43)) ** (r + 2)))
    assert alive[2] < alive[1]  # a long silence since the last purchase


def test_gamma_gamma_expected_spend():
    params = {"p": 6.25, "q": 3.74, "v": 15.44}
    x, m = np.array([0.0, 1.0, 10.0, 3.0]), np.array([np.nan, 50.0, 50.0, -5.0])
    spend = clv.gamma_gamma_expected_spend(params, x, m)
    population = 6.25 * 15.44 / 2.74
    assert spend[0] == pytest.approx(population)
    weight = 6.25 / (6.25 + 2.74)  # x p / (x p + q − 1) on the customer's own mean, x = 1
    assert spend[1] == pytest.approx(weight * 50 + (1 - weight) * population)
    assert population < spend[1] < spend[2] < 50  # more purchases, closer to the customer's own mean
    assert spend[3] == pytest.approx(6.25 * 15.44 / (3 * 6.25 + 2.74))  # m ≤ 0 is taken as 0
    assert np.isnan(clv.gamma_gamma_expected_spend({"p": 2.0, "q": 0.9, "v": 1.0}, np.ones(2), np.ones(2))).all()


def test_analytic_gradients():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 8, 60).astype(float)
    T = rng.uniform(0.5, 3, 60)
    t_x = np.where(x > 0, T * rng.uniform(0.1, 1, 60), 0.0)
    m = rng.gamma(4, 10, 60)
    xg = np.maximum(x, 1)
    for theta in (np.array([0.3, 0.9, 0.8, 2.4]), np.array([2.0, 0.2, 3.0, 0.6])):
        def f(th):
            return clv._bgnbd_ll_grad(th, x, t_x, T, gradient=False)[0].sum()

        def g(th):
            return clv._bgnbd_ll_grad(th, x, t_x, T)[1].sum(axis=0)

        assert optimize.check_grad(f, g, theta) < 1e-5 * max(1, np.abs(g(theta)).max())
    for theta in (np.array([6.0, 3.7, 1.5]), np.array([0.8, 12.0, 40.0])):
        def fg(th):
            return clv._gg_ll_grad(th, xg, m, gradient=False)[0].sum()

        def gg(th):
            return clv._gg_ll_grad(th, xg, m)[1].sum(axis=0)

        assert optimize.check_grad(fg, gg, theta) < 1e-5 * max(1, np.abs(gg(theta)).max())


def _textbook_bgnbd(theta, x, t_x, T):
    """The BG/NBD log-likelihood and gradient computed customer by customer, as written in the paper."""
    r, alpha, a, b = theta
    repeat = x > 0
    rx = r + x
    bx1 = np.where(repeat, b + x - 1.0, 1.0)
    log_aT, log_atx = np.log(alpha + T), np.log(alpha + t_x)
    a3 = -rx * log_aT
    a4 = np.where(repeat, math.log(a) - np.log(bx1) - rx * log_atx, -np.inf)
    mix = np.logaddexp(a3, a4)
    ll = (
        special.gammaln(rx)
        - special.gammaln(r)
        + r * math.log(alpha)
        + (special.betaln(a, b + x) - special.betaln(a, b))
    )
    ll = ll + mix
    w3, w4 = np.exp(a3 - mix), np.where(repeat, np.exp(a4 - mix), 0.0)
    psi_abx, psi_ab = special.digamma(a + b + x), special.digamma(a + b)
    return ll, np.column_stack(
        [
            special.digamma(rx) - special.digamma(r) + math.log(alpha) - w3 * log_aT - w4 * log_atx,
            r / alpha - w3 * rx / (alpha + T) - w4 * rx / (alpha + t_x),
            psi_ab - psi_abx + w4 / a,
            special.digamma(b + x) - special.digamma(b) + psi_ab - psi_abx - w4 / bx1,
        ]
    )


def _textbook_gamma_gamma(theta, x, m):
    p, q, v = theta
    px, log_xm_v = p * x, np.log(x * m + v)
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * math.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - px * log_xm_v
        - q * log_xm_v
    )
    psi_pxq = special.digamma(px + q)
    return ll, np.column_stack(
        [
            x * (psi_pxq - special.digamma(px) + np.log(m) + np.log(x) - log_xm_v),
            psi_pxq - special.digamma(q) + math.log(v) - log_xm_v,
            q / v - (px + q) / (x * m + v),
        ]
    )


def test_likelihood_terms_of_x_alone_are_computed_once_per_distinct_x():
    """The fits compute the gamma and digamma functions of x once per distinct x and gather them: the same
    per-customer values as the textbook formulas (every customer's own), to rounding."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 30, 5000).astype(float)
    T = rng.uniform(0.5, 3, 5000)
    t_x = np.where(x > 0, T * rng.uniform(0.1, 1, 5000), 0.0)
    m = rng.gamma(4, 10, 5000)
    theta = np.array([0.4, 1.3, 0.7, 2.9])
    levels = clv.Levels.of(x)
    assert len(levels.values) < 31 and np.array_equal(levels.values[levels.index], x)
    for got in (clv._bgnbd_ll_grad(theta, x, t_x, T), clv._bgnbd_ll_grad(theta, x, t_x, T, levels=levels)):
        expected = _textbook_bgnbd(theta, x, t_x, T)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-15)
    xg, theta_gg = np.maximum(x, 1), np.array([2.1, 3.4, 15.0])
    levels_gg = clv.Levels.of(xg, log_m=np.log(m))
    for got in (clv._gg_ll_grad(theta_gg, xg, m), clv._gg_ll_grad(theta_gg, xg, m, levels=levels_gg)):
        expected = _textbook_gamma_gamma(theta_gg, xg, m)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-15)


def test_fit_is_invariant_to_the_time_unit(cdnow, cdnow_fit):
    """Days instead of weeks: r, a, b unchanged, α × 7 (the same model in another unit)."""
    daily = clv.fit_clv(cdnow, date(1997, 9, 30), ClvRules(time_unit_days=1, horizon_units=364))
    weekly = cdnow_fit.bgnbd.params
    assert daily.bgnbd.params["alpha"] == pytest.approx(weekly["alpha"] * 7, rel=1e-4)
    for name in ("r", "a", "b"):
        assert daily.bgnbd.params[name] == pytest.approx(weekly[name], rel=1e-4)
    assert daily.customers["predicted_purchases"].to_numpy() == pytest.approx(
        cdnow_fit.customers["predicted_purchases"].to_numpy(), rel=1e-4
    )


# ------------------------------------------------------------------------------------------ degenerate data


def _null_counts(result: clv.ClvResult) -> dict[str, int]:
    return {c: result.customers[c].null_count() for c in clv.PREDICTION_COLUMNS}


def test_empty_input():
    with pytest.warns(clv.ClvWarning, match="no delivered orders"):
        result = clv.fit_clv(transactions([]), date(2024, 6, 30), WEEKLY)
    assert result.customers.is_empty()
    assert set(clv.PREDICTION_COLUMNS) <= set(result.customers.columns)
    assert result.params.is_empty()
    assert result.params.columns[:3] == ["model", "parameter", "value"]
    assert result.warnings == ["CLV: no delivered orders up to 2024-06-30; nothing to fit"]


def test_one_customer():
    tx = transactions([("a", datetime(2024, 1, 1), "10"), ("a", datetime(2024, 2, 1), "12")])
    with pytest.warns(clv.ClvWarning) as record:
        result = clv.fit_clv(tx, date(2024, 6, 30), WEEKLY)
    assert [str(w.message) for w in record] == result.warnings
    assert "BG/NBD not fitted: 1 customer(s)" in result.warnings[0]
    assert result.customers.height == 1
    assert _null_counts(result) == dict.fromkeys(clv.PREDICTION_COLUMNS, 1)
    assert result.params["value"].null_count() == 7
    assert not result.params["converged"].any()
    assert len(result.warnings) == 2  # BG/NBD and Gamma-Gamma


def test_no_repeat_buyers():
    tx = transactions([(f"c{i}", datetime(2024, 1, 1 + i), "10") for i in range(20)])
    with pytest.warns(clv.ClvWarning) as record:
        result = clv.fit_clv(tx, date(2024, 6, 30), WEEKLY)
    messages = [str(w.message) for w in record]
    assert any("no repeat buyer" in m for m in messages)
    assert result.warnings == messages
    assert _null_counts(result) == dict.fromkeys(clv.PREDICTION_COLUMNS, 20)
    assert result.customers["frequency_x"].to_list() == [0] * 20


def _repeat_buyers(amount_first, amount_repeat, n=40):
    rng = np.random.default_rng(11)
    rows = []
    for i in range(n):
        start = datetime(2023, 1, 1) + timedelta(days=int(rng.integers(0, 200)))
        rows.append((f"c{i:03d}", start, amount_first(i)))
        for k in range(int(rng.integers(0, 5))):
            later = start + timedelta(days=20 * (k + 1) + int(rng.integers(0, 10)))
            rows.append((f"c{i:03d}", later, amount_repeat(i, k)))
    return transactions(rows)


def test_all_zero_spend_nulls_gamma_gamma_only():
    tx = simulate(500, {"r": 0.6, "alpha": 3.0, "a": 0.9, "b": 3.5}, {"p": 4.0, "q": 4.0, "v": 20.0}, seed=1)
    tx = tx.with_columns(pl.lit(Decimal("0.00")).cast(pl.Decimal(18, 2)).alias("net_amount_reporting"))
    with pytest.warns(clv.ClvWarning) as record:
        result = clv.fit_clv(tx, date(2023, 12, 31), WEEKLY)
    assert [str(w.message) for w in record] == result.warnings == [
        "CLV: Gamma-Gamma not fitted: 0 repeat buyer(s) with a positive mean repeat value (at least 2 needed); "
        "expected spend and CLV are null"
    ]
    nulls = _null_counts(result)
    n = result.customers.height
    assert (nulls["predicted_purchases"], nulls["p_alive"]) == (0, 0)  # BG/NBD is still fitted
    assert (nulls["expected_avg_spend"], nulls["clv"]) == (n, n)
    bg = result.params.filter(pl.col("model") == "bg_nbd")
    gg = result.params.filter(pl.col("model") == "gamma_gamma")
    assert bg["converged"].all() and bg["value"].null_count() == 0
    assert not gg["converged"].any() and gg["value"].null_count() == 3


def test_q_at_most_one_nulls_spend():
    """Very heavy-tailed spend across customers (ν ~ Gamma(q = 0.5)) gives q ≤ 1: no finite mean spend."""
    bgnbd, gamma_gamma = {"r": 0.6, "alpha": 3.0, "a": 0.9, "b": 3.5}, {"p": 4.0, "q": 0.5, "v": 20.0}
    tx = simulate(3000, bgnbd, gamma_gamma, seed=5)
    with pytest.warns(clv.ClvWarning, match="q = .* ≤ 1"):
        result = clv.fit_clv(tx, date(2023, 12, 31), WEEKLY)
    assert result.gamma_gamma.converged and result.gamma_gamma.params["q"] <= 1
    nulls, n = _null_counts(result), result.customers.height
    assert (nulls["predicted_purchases"], nulls["expected_avg_spend"], nulls["clv"]) == (0, n, n)
    assert len(result.warnings) == 1
    gg = result.params.filter(pl.col("model") == "gamma_gamma")
    assert gg["converged"].all() and gg["value"].null_count() == 0  # fitted, reported, just unusable


def simulate(n, bgnbd, gamma_gamma, *, seed, start=datetime(2022, 1, 1), window_days=180, as_of=date(2023, 12, 31)):
    """Orders drawn from the models themselves: λ ~ Gamma(r, α), dropout p ~ Beta(a, b) after each repeat
    purchase, spend ν ~ Gamma(q, rate v), each purchase ~ Gamma(p, rate ν); time unit a week. First purchases
    are spread over `window_days` from `start`; loops over purchase rounds, not customers."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(bgnbd["r"], 1 / bgnbd["alpha"], n)
    drop = rng.beta(bgnbd["a"], bgnbd["b"], n)
    nu = rng.gamma(gamma_gamma["q"], 1 / gamma_gamma["v"], n)
    first = rng.integers(0, window_days, n)
    horizon_weeks = ((as_of - start.date()).days - first) / 7
    ids, days, values = [np.arange(n)], [first.astype(float)], [rng.gamma(gamma_gamma["p"], 1 / nu)]
    clock, active = np.zeros(n), np.ones(n, dtype=bool)
    while active.any():
        clock[active] += rng.exponential(1 / lam[active])
        active &= clock <= horizon_weeks
        who = np.flatnonzero(active)
        ids.append(who)
        days.append(first[who] + np.floor(clock[who] * 7))
        values.append(rng.gamma(gamma_gamma["p"], 1 / nu[who]))
        active[who] = rng.random(len(who)) >= drop[who]
    ids, days, values = np.concatenate(ids), np.concatenate(days), np.concatenate(values)
    return pl.DataFrame(
        {
            "customer_id": [f"c{i:05d}" for i in ids],
            "placed_at": pl.Series([start + timedelta(days=int(d)) for d in days], dtype=pl.Datetime("us")),
            "net_amount_reporting": pl.Series(np.round(values, 2) + 0.01).cast(pl.Decimal(18, 2)),
        }
    )


def test_parameters_are_recovered_from_simulated_orders():
    truth_bg = {"r": 0.6, "alpha": 3.0, "a": 0.9, "b": 3.5}
    truth_gg = {"p": 5.0, "q": 4.0, "v": 60.0}
    tx = simulate(4000, truth_bg, truth_gg, seed=2024)
    with warnings.catch_warnings():
        warnings.simplefilter("error", clv.ClvWarning)
        result = clv.fit_clv(tx, date(2023, 12, 31), load_rules())  # the full Rules object works too
    assert result.warnings == []
    assert _null_counts(result) == dict.fromkeys(clv.PREDICTION_COLUMNS, 0)
    assert result.params["converged"].all()
    for name, value in {**truth_bg, **truth_gg}.items():
        fitted = {**result.bgnbd.params, **result.gamma_gamma.params}[name]
        assert fitted == pytest.approx(value, rel=0.25), name


def test_identical_spend_is_the_homogeneous_limit():
    """Every repeat purchase worth the same: p and q grow without bound (warned) and the expected spend of
    every customer is that value, the limit of the model."""
    tx = _repeat_buyers(lambda i: 10 + i, lambda i, k: 25, n=60)
    with pytest.warns(clv.ClvWarning) as record:
        result = clv.fit_clv(tx, date(2024, 1, 31), WEEKLY)
    assert any("Gamma-Gamma p = " in str(w.message) and "no spread in spend" in str(w.message) for w in record)
    assert result.gamma_gamma.converged
    assert result.customers["expected_avg_spend"].to_numpy() == pytest.approx(25.0, rel=1e-3)


def test_few_identical_values_are_the_homogeneous_limit_too():
    """Eight customers with the same spend: p and q run towards their bound as with many (on some machines onto
    it, and the optimizer then stops "abnormally"); either way the fit is the limit, whose expected spend is
    that value for everyone."""
    x, m = np.array([1.0, 2, 3, 1, 2, 5, 1, 1]), np.full(8, 20.0)
    fit = clv.fit_gamma_gamma(x, m)
    assert fit.converged and min(fit.params["p"], fit.params["q"]) > 1e5
    spend = clv.gamma_gamma_expected_spend(fit.params, np.append(x, 0.0), np.append(m, 0.0))
    np.testing.assert_allclose(spend, 20.0, rtol=1e-3)  # as with many customers


def test_a_parameter_on_its_bound_off_the_ridge_is_a_failed_fit(monkeypatch):
    """A bound reached by anything but the two shape parameters growing together is no limit model."""

    def stuck_on_the_lower_bound(objective, start, **kwargs):
        return optimize.OptimizeResult(x=np.array([-20.0, 3.0, 0.5]), fun=1.0, success=True, message="")

    monkeypatch.setattr(clv.optimize, "minimize", stuck_on_the_lower_bound)
    fit = clv.fit_gamma_gamma(np.array([1.0, 2, 3, 1, 2, 5, 1, 1]), np.array([20.0, 21, 19, 22, 18, 20, 25, 15]))
    assert not fit.converged and "ran to its bound" in fit.message


def test_date_typed_placed_at_and_integer_ids():
    tx = pl.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "placed_at": [date(2024, 1, 1), date(2024, 1, 8), date(2024, 1, 3)],
            "net_amount_reporting": [5.0, 7.0, 1.0],
        }
    )
    summary = clv.rfm_summary(tx, date(2024, 1, 15), 7)
    assert summary["customer_id"].to_list() == [1, 2]
    assert summary.select(*clv.SUMMARY_MODEL_COLUMNS, "monetary_value").rows() == [
        (1, 1.0, 2.0, 7.0),
        (0, 0.0, 12 / 7, None),
    ]
