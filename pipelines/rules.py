"""The rules file (SPEC §5.1): a typed model loaded from YAML.

Every number that changes what a customer earns lives here, so a shop can change its programme without code.
Decimals are kept as `Decimal` so that money and points arithmetic never passes through binary floats.
"""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.schemas import SOURCES

# The source bonuses `source_bonuses` may name (SPEC §5.3) -> the core.orders column that carries each.
SOURCE_BONUS_COLUMNS = {
    "birthdayBonus": "birthday_bonus",
    "referralBonus": "referral_bonus",
    "subscriptionBonus": "subscription_bonus",
    "bonusPoints": "bonus_points",
}


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EarnRules(_Strict):
    points_per_unit: Decimal = Field(default=Decimal(1), ge=0)
    rounding: Literal["floor"] = "floor"
    earn_on: Literal["delivered"] = "delivered"
    pending_days: int = Field(default=0, ge=0)


class RedeemRules(_Strict):
    points_per_unit: Decimal = Field(default=Decimal(20), gt=0)
    rewards: dict[str, int] = Field(default_factory=dict)

    @field_validator("rewards")
    @classmethod
    def _positive_rewards(cls, value: dict[str, int]) -> dict[str, int]:
        for code, points in value.items():
            if points < 0:
                raise ValueError(f"reward {code!r} costs a negative number of points")
        return value


class Tier(_Strict):
    name: str
    min_points: int = Field(ge=0)
    multiplier: Decimal = Field(gt=0)


class RfmRules(_Strict):
    window_days: int = Field(default=730, gt=0)
    frequency_bins: list[int] = Field(default_factory=lambda: [1, 2, 3, 5])

    @field_validator("frequency_bins")
    @classmethod
    def _four_ascending_bins(cls, value: list[int]) -> list[int]:
        if len(value) != 4 or any(b <= a for a, b in zip(value, value[1:], strict=False)) or value[0] < 1:
            raise ValueError("must be four strictly ascending positive order counts, e.g. [1, 2, 3, 5]")
        return value


class ClvRules(_Strict):
    time_unit_days: int = Field(default=7, gt=0)
    horizon_units: int = Field(default=52, gt=0)


class Rules(_Strict):
    reporting_currency: str = "USD"
    fx_rates: dict[str, Decimal]
    default_currency: dict[str, str]
    earn: EarnRules = EarnRules()
    category_multipliers: dict[str, Decimal] = Field(default_factory=dict)
    first_purchase_bonus: int = Field(default=100, ge=0)
    source_bonuses: list[str] = Field(default_factory=list)
    redeem: RedeemRules = RedeemRules()
    expiry_days: int = Field(default=365, gt=0)
    tiers: list[Tier]
    allow_negative_balance: bool = True
    rfm: RfmRules = RfmRules()
    clv: ClvRules = ClvRules()

    @field_validator("fx_rates")
    @classmethod
    def _positive_rates(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for currency, rate in value.items():
            if rate <= 0:
                raise ValueError(f"rate of {currency} must be positive, got {rate}")
        return value

    @field_validator("category_multipliers")
    @classmethod
    def _positive_multipliers(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for category, multiplier in value.items():
            if multiplier < 0:
                raise ValueError(f"multiplier of {category!r} must not be negative, got {multiplier}")
        return value

    @field_validator("source_bonuses")
    @classmethod
    def _known_source_bonuses(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in SOURCE_BONUS_COLUMNS]
        if unknown:
            raise ValueError(f"unknown source bonus {', '.join(unknown)} (known: {', '.join(SOURCE_BONUS_COLUMNS)})")
        if len(set(value)) != len(value):
            raise ValueError("a source bonus is named twice")
        return value

    @field_validator("tiers")
    @classmethod
    def _tiers_ascending(cls, value: list[Tier]) -> list[Tier]:
        if not value:
            raise ValueError("at least one tier is needed")
        if value[0].min_points != 0:
            raise ValueError(f"the first tier ({value[0].name}) must start at min_points 0")
        for lower, upper in zip(value, value[1:], strict=False):
            if upper.min_points <= lower.min_points:
                raise ValueError(
                    f"tiers must be in ascending min_points: {upper.name} ({upper.min_points}) "
                    f"comes after {lower.name} ({lower.min_points})"
                )
        if len({t.name for t in value}) != len(value):
            raise ValueError("tier names must be unique")
        return value

    @model_validator(mode="after")
    def _currencies_known(self) -> Rules:
        if self.reporting_currency not in self.fx_rates:
            raise ValueError(f"reporting_currency {self.reporting_currency} has no entry in fx_rates")
        for source, currency in self.default_currency.items():
            if source not in SOURCES:
                raise ValueError(f"default_currency: unknown source {source!r} (known: {', '.join(SOURCES)})")
            if currency not in self.fx_rates:
                raise ValueError(f"default_currency.{source}: {currency} has no entry in fx_rates")
        missing = [s for s in SOURCES if s not in self.default_currency]
        if missing:
            raise ValueError(f"default_currency: no currency for {', '.join(missing)}")
        return self

    def fx_rate(self, currency: str) -> Decimal:
        return self.fx_rates[currency]


def default_rules_path() -> Path:
    return Path(str(resources.files("pipelines").joinpath("default_rules.yaml")))


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return "; ".join(lines)


def load_rules(path: str | Path | None = None) -> Rules:
    """Load and check a rules file; the packaged defaults when `path` is None."""
    rules_path = Path(path) if path else default_rules_path()
    try:
        data = yaml.safe_load(rules_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RulesError(f"rules file {rules_path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"rules file {rules_path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RulesError(f"rules file {rules_path} must hold a mapping of settings")
    try:
        return Rules.model_validate(data)
    except ValidationError as exc:
        raise RulesError(f"rules file {rules_path}: {_describe(exc)}") from exc
