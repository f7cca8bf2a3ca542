"""The rules file: defaults as in SPEC §5.1, and every kind of mistake named by its key."""

from decimal import Decimal

import pytest

from pipelines.rules import RulesError, default_rules_path, load_rules

DEFAULT = default_rules_path().read_text()


def _load(tmp_path, text):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return load_rules(path)


def test_defaults_match_the_spec():
    rules = load_rules()
    assert rules.fx_rates["BRL"] == Decimal("0.18") and rules.reporting_currency == "USD"
    assert [(t.name, t.min_points, t.multiplier) for t in rules.tiers] == [
        ("Bronze", 0, Decimal("1.0")),
        ("Silver", 1000, Decimal("1.1")),
        ("Gold", 2500, Decimal("1.25")),
        ("Platinum", 5000, Decimal("1.5")),
    ]
    assert rules.redeem.points_per_unit == 20 and rules.expiry_days == 365 and rules.first_purchase_bonus == 100
    assert rules.rfm.frequency_bins == [1, 2, 3, 5] and rules.clv.horizon_units == 52


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("expiry_days:", "expiry_dayz:"), "expiry_dayz"),  # unknown key
        (("pending_days: 0", "pending_dayz: 0"), "earn.pending_dayz"),  # unknown nested key
        (("{name: Gold,     min_points: 2500", "{name: Gold,     min_points: 900"), "tiers"),  # not ascending
        (("BRL: 0.18", "BRL: -0.18"), "fx_rates"),  # negative rate
        (("{Luxury: 2.0", "{Luxury: -2.0"), "category_multipliers"),  # negative multiplier
        (("bonifiq: BRL", "bonifiq: JPY"), "default_currency"),  # a default currency with no rate
        (("points_per_unit: 20", "points_per_unit: 0"), "redeem.points_per_unit"),
        (("frequency_bins: [1, 2, 3, 5]", "frequency_bins: [1, 3, 2, 5]"), "rfm.frequency_bins"),
        (("source_bonuses: [birthdayBonus", "source_bonuses: [birthdayBonuz"), "source_bonuses"),
    ],
)
def test_a_bad_rules_file_names_the_key(tmp_path, change, named):
    old, new = change
    assert old in DEFAULT
    with pytest.raises(RulesError) as error:
        _load(tmp_path, DEFAULT.replace(old, new, 1))
    assert named in str(error.value)


def test_not_yaml_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RulesError, match="not valid YAML"):
        _load(tmp_path, "tiers: [unclosed")
    with pytest.raises(RulesError, match="does not exist"):
        load_rules(tmp_path / "nope.yaml")
