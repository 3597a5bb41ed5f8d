"""Output frame: canonical manifest columns in schema order, the observable selection columns,
then the simulation's ground truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import CANONICAL_COLUMNS, LABEL_COLUMNS, SELECTION_COLUMNS, TRANSPORT_MODES
from training.synthetic.codes import DISGUISES, SCENARIOS, SELECTED_BY, SELECTIONS, SIM_COLUMNS
from training.synthetic.config import _share
from training.synthetic.helpers import _labels, _text, _text_or_none
from training.synthetic.world import _World

# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _codes(lines: pd.DataFrame, name: str) -> np.ndarray:
    return lines[name].to_numpy()


def _canonical(world: _World, lines: pd.DataFrame) -> dict:
    return {
        "declaration_id": _labels("E", _codes(lines, "declaration_num"), 9),
        "declared_at": _codes(lines, "day").astype("datetime64[D]").astype("datetime64[ns]"),
        "origin_country": _text(world.countries, _codes(lines, "origin")),
        "export_country": _text(world.countries, _codes(lines, "export")),
        "port_of_loading": _text(world.ports, _codes(lines, "pol")),
        "port_of_discharge": _text(world.ports, _codes(lines, "pod")),
        "transshipment_ports": _text([option or None for option in world.transship], _codes(lines, "ts")),
        "transport_mode": _text(TRANSPORT_MODES, _codes(lines, "mode")),
        "shipper_id": _labels("S", _codes(lines, "shipper_num"), 7),
        "consignee_id": _labels("P", _codes(lines, "consignee_num"), 7),
        "importer_id": _labels("P", _codes(lines, "importer_num"), 7),
        "declarant_id": _labels("B", _codes(lines, "declarant_num"), 4),
    }


def _selection(world: _World, lines: pd.DataFrame) -> dict:
    """What customs knows about its own choice: the channel and the probability of being picked.

    Exploration (random) lines were picked with ``inspection.random_share``, targeted lines with
    certainty; both are missing on lines nobody inspected.
    """
    selection = _codes(lines, "selection")
    probability = np.array([np.nan, _share(world.cfg, "inspection.random_share"), 1.0])
    return {"selection_probability": probability[selection], "selected_by": _text(SELECTED_BY, selection)}


def _simulation(world: _World, lines: pd.DataFrame) -> dict:
    return {
        "sim_scenario": _text(SCENARIOS, _codes(lines, "scenario")),
        "sim_fraud": _codes(lines, "fraud").astype(np.int64),
        "sim_commodity": _text_or_none(world.commodities, _codes(lines, "commodity")),
        "sim_form": _text_or_none(world.forms.keys, _codes(lines, "form")),
        "sim_disguise": _text(DISGUISES, _codes(lines, "disguise")),
        "sim_cover_family": _text(world.goods.family, _codes(lines, "good")),
        "sim_route": _text([*world.lanes.ids, *world.routes.ids], _codes(lines, "route")),
        "sim_network": _codes(lines, "network").astype(np.int64),
        "sim_selection": _text(SELECTIONS, _codes(lines, "selection")),
    }


def _assemble(world: _World, lines: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns in schema order, selection columns, then the ground truth; lines are already sorted."""
    columns = {**_canonical(world, lines), **_selection(world, lines), **_simulation(world, lines)}
    for name in set(CANONICAL_COLUMNS) - set(columns):
        columns[name] = lines[name].array
    return pd.DataFrame({name: columns[name] for name in (*CANONICAL_COLUMNS, *SELECTION_COLUMNS, *SIM_COLUMNS)})


def arriving_lines(frame: pd.DataFrame) -> pd.DataFrame:
    """Simulated lines as a manifest arrives for scoring: no outcomes, no selection, no simulated truth."""
    hidden = set(LABEL_COLUMNS) | set(SELECTION_COLUMNS) | set(SIM_COLUMNS)
    return frame.drop(columns=[c for c in frame.columns if c in hidden])
