"""Shared fixtures: one `loyalty run` over the seed fixtures, for the tests that only read its output."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.settings import ENV, Settings
from tests.helpers import SEEDS

SEED_RUN_AS_OF = "2024-12-31"


@dataclass
class PipelineRun:
    """A `loyalty run` into its own directory (warehouse/, exports/, reports/), and what it printed."""

    root: Path
    raw: Path
    settings: Settings
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""

    @classmethod
    def at(cls, root: Path, raw: Path) -> PipelineRun:
        settings = Settings.resolve(
            raw_dir=str(raw),
            warehouse=str(root / "warehouse" / "loyalty.duckdb"),
            exports_dir=str(root / "exports"),
            reports_dir=str(root / "reports"),
            as_of=SEED_RUN_AS_OF,
        )
        return cls(root=root, raw=raw, settings=settings)

    def args(self) -> list[str]:
        s = self.settings
        paths = ["--raw-dir", str(self.raw), "--warehouse", str(s.warehouse), "--exports-dir", str(s.exports_dir)]
        return ["run", *paths, "--as-of", s.as_of.isoformat()]

    def env(self) -> dict[str, str]:
        """The environment of a `loyalty run` subprocess: no LOYALTY_* of ours, reports under the run's directory."""
        env = {k: v for k, v in os.environ.items() if k not in ENV.values()}
        return {**env, ENV["reports_dir"]: str(self.settings.reports_dir)}

    def copy(self, root: Path) -> PipelineRun:
        """The same run's output copied to `root`, for a test that runs again or breaks something."""
        shutil.copytree(self.root, root)
        return PipelineRun.at(root, self.raw)

    def run(self, monkeypatch: pytest.MonkeyPatch) -> int:
        """`loyalty run` in this process (the CLI exports its settings to the environment: monkeypatch restores it)."""
        for name in ENV.values():
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(ENV["reports_dir"], str(self.settings.reports_dir))
        return cli.main(self.args())


@pytest.fixture(scope="session")
def seed_run(tmp_path_factory) -> PipelineRun:
    """The seed fixtures through `loyalty run` once, stderr not a terminal. Read its output; do not change it."""
    base = tmp_path_factory.mktemp("seed_run")
    raw = base / "raw"
    shutil.copytree(SEEDS, raw)
    run = PipelineRun.at(base / "out", raw)
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        run.exit_code = run.run(monkeypatch)
    run.stdout, run.stderr = out.getvalue(), err.getvalue()
    return run
