"""The settings resource: every asset reads paths and options through it, at run time."""

import dagster as dg

from pipelines.rules import Rules, load_rules
from pipelines.settings import Settings


class LoyaltySettings(dg.ConfigurableResource):
    """Run settings; each field left empty falls back to its LOYALTY_* variable, then to the default."""

    raw_dir: str | None = None
    warehouse: str | None = None
    rules: str | None = None
    as_of: str | None = None
    exports_dir: str | None = None
    reports_dir: str | None = None
    document_salt: str | None = None

    def resolved(self) -> Settings:
        return Settings.resolve(
            raw_dir=self.raw_dir,
            warehouse=self.warehouse,
            rules=self.rules,
            as_of=self.as_of,
            exports_dir=self.exports_dir,
            reports_dir=self.reports_dir,
            document_salt=self.document_salt,
        )

    def load_rules(self) -> Rules:
        return load_rules(self.resolved().rules)

    def scalar(self, sql: str) -> int:
        """One number from the warehouse, read-only: what the asset checks count."""
        from pipelines import warehouse

        with warehouse.connect(self.resolved().warehouse, read_only=True) as con:
            return int(con.execute(sql).fetchone()[0])
