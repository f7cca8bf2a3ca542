"""The CDNOW sample through the real pipeline, as eSputnik orders: the published estimates within 1 %."""

import json

import duckdb
import pytest

from pipelines import cli
from pipelines.settings import ENV
from tests.test_clv import cdnow_sample_path

PUBLISHED = {
    ("bg_nbd", "r"): 0.243,
    ("bg_nbd", "alpha"): 4.414,
    ("bg_nbd", "a"): 0.793,
    ("bg_nbd", "b"): 2.426,
    ("gamma_gamma", "p"): 6.25,
    ("gamma_gamma", "q"): 3.74,
    ("gamma_gamma", "v"): 15.44,
}


@pytest.fixture
def cdnow_raw(tmp_path):
    """CDNOW transactions written as eSputnik DELIVERED orders, one ndjson file."""
    lines = []
    for i, line in enumerate(cdnow_sample_path().read_text().splitlines()):
        if not line.strip():
            continue
        _, customer, day, _cds, dollars = line.split()
        lines.append(
            json.dumps(
                {
                    "externalOrderId": f"cdnow-{i}",
                    "externalCustomerId": customer,
                    "totalCost": dollars,
                    "shipping": 0,
                    "status": "DELIVERED",
                    "date": f"{day[:4]}-{day[4:6]}-{day[6:]}T12:00:00+00:00",
                    "email": f"customer{customer}@cdnow.example",
                    "currency": "USD",
                }
            )
        )
    raw = tmp_path / "raw"
    (raw / "esputnik").mkdir(parents=True)
    (raw / "esputnik" / "cdnow.ndjson").write_text("\n".join(lines) + "\n")
    return raw


def test_cdnow_through_the_pipeline_reproduces_the_published_estimates(tmp_path, cdnow_raw, monkeypatch):
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV["exports_dir"], str(tmp_path / "exports"))
    monkeypatch.setenv(ENV["reports_dir"], str(tmp_path / "reports"))
    warehouse = tmp_path / "wh.duckdb"
    assert cli.main(["run", "--raw-dir", str(cdnow_raw), "--warehouse", str(warehouse), "--as-of", "1997-09-30"]) == 0
    with duckdb.connect(str(warehouse), read_only=True) as con:
        params = {
            (m, p): (v, n, ok)
            for m, p, v, n, ok in con.execute(
                "select model, parameter, value, customers_used, converged from core.clv_model_params"
            ).fetchall()
        }
        customers = con.execute("select count(*) from core.clv_customers").fetchone()[0]
    assert customers == 2357
    for key, published in PUBLISHED.items():
        value, _, converged = params[key]
        assert converged
        assert value == pytest.approx(published, rel=0.01), key
    assert params[("bg_nbd", "r")][1] == 2357
