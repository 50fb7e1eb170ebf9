"""An example third-party tier package: one TOML table, one hook, no rules of its own.

Installing it (``pip install -e examples/tiers_8tier``) is the whole change: the core finds the
``tiers_8tier`` entry point, validates ``tiers.toml`` and, as the only third-party table, makes it
the active one; tier selection, clamping and the plan stay with ``tiers_default``'s rules.
"""

from __future__ import annotations

from importlib.resources import files

from acestep_core.plugin_api import TierTable, hookimpl, parse_table

TABLE_FILE = "tiers.toml"


@hookimpl
def register_tier_tables() -> TierTable:
    """The table, validated on every load: a broken file is reported by the core and skipped."""
    return parse_table(
        files(__name__).joinpath(TABLE_FILE).read_text(encoding="utf-8"), source=f"{__name__}/{TABLE_FILE}"
    )
