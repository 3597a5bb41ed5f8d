"""Codes shared by the generator's stages: scenarios, disguises, selection channels, columns."""

from __future__ import annotations

from features.schema import EXPLORATION, TRANSPORT_MODES

SCENARIOS = ("background_cover", "background_other", "legit_target", "switcher", "fraud_network")
DISGUISES = ("none", "true_value", "undervalued")
SELECTIONS = ("none", "random", "targeted")
SIM_COLUMNS = (
    "sim_scenario",
    "sim_fraud",
    "sim_commodity",
    "sim_form",
    "sim_disguise",
    "sim_cover_family",
    "sim_route",
    "sim_network",
    "sim_selection",
)
# What customs knows about why it inspected a line (features.schema.SELECTION_COLUMNS): the channel
# (exploration for random inspections, "targeted" for rule-targeted ones) and its probability.
SELECTED_BY = (None, EXPLORATION, "targeted")  # indexed by the selection code

_BG_COVER, _BG_OTHER, _LEGIT, _SWITCH, _FRAUD = range(5)
_NO_DISGUISE, _TRUE_VALUE, _UNDERVALUED = range(3)
_COVER, _OTHER, _TARGET = range(3)
_SEA, _AIR, _RAIL, _POST = (TRANSPORT_MODES.index(m) for m in ("sea", "air", "rail", "post"))
# Kinds of entity keys: legitimate pools are sized from the data, the others come from the story.
# Heavy newcomers are legitimate shippers of their own; established parties are members of the
# legitimate pools that a fraud declaration borrows.
_POOL, _NETWORK, _ONE_OFF, _SWITCH_CN, _SWITCH_HUB, _FORWARDER, _SWITCH_BUYER, _NEWCOMER, _ESTABLISHED = range(9)
_PER_100K = 100_000.0
