"""`loyalty bench` on a small sample: every stage is timed, the floor is measured, the ratio is written."""

import json

from pipelines.bench import STAGES
from pipelines.cli import main


def test_bench_writes_every_stage_floor_and_ratio(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert main(["bench", "--orders", "2000", "--data-dir", str(tmp_path / "data"), "--json", str(out)]) == 0

    figures = json.loads(out.read_text())
    assert [s["name"] for s in figures["stages"]] == list(STAGES)
    assert all(s["wall_s"] > 0 and s["peak_rss_bytes"] > 0 for s in figures["stages"])
    assert figures["floor_s"] > 0
    assert figures["floor_records"] > 0
    assert figures["ratio"] == round(figures["total_s"] / figures["floor_s"], 2)
    assert figures["records"] > 2000  # orders plus their status updates
    table = capsys.readouterr().out
    assert "total / floor" in table and "floor" in table

    # The generated data is cached by (orders, seed): a second run does not generate again.
    assert (tmp_path / "data" / "orders-2000-seed-42" / "raw.complete").exists()
