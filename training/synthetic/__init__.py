"""Synthetic US import manifests with disguised antimony, gallium, germanium and rare earths.

No labelled public data exists for this fraud, so the model trains on manifest lines simulated
from the domain facts: legitimate background trade in the cover codes and in unrelated goods,
legitimate imports of the controlled goods from producer countries, fraud networks that route
Chinese goods through diversion hubs under cover codes once the export controls bite, and buyers
who switch from direct Chinese imports to a hub subsidiary. Customs labels exist only for the
minority of inspected lines, chosen by an imperfect rule of thumb plus a random share.

Every number comes from the generator configuration (``training/data/generator.yaml``) or from
the reference tables (``features/data``). One ``numpy`` generator seeded once drives every draw
and all categories are ordered by name, so the same arguments give the same frame.

The output holds the canonical manifest columns followed by ground-truth columns prefixed
``sim_`` (see :data:`SIM_COLUMNS`), which evaluation may use to slice results but features never
read. Between the two come the selection columns (:data:`SELECTION_COLUMNS`), which customs
observes: why a line was inspected and with what probability.

The stages live in submodules, each a step of :func:`generate_manifest`: ``config`` (loading and
typed access), ``world`` (configuration and reference tables compiled into arrays),
``declarations`` (scenarios, fraud networks, switching buyers), ``entities`` (parties),
``lines`` (goods, physics, values, text), ``inspection`` (selection and labels) and ``output``
(the frame's columns); ``codes`` and ``helpers`` hold what they share.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import numpy as np
import pandas as pd

from features.reference import ReferenceTables, load_reference
from features.schema import SELECTION_COLUMNS
from training.synthetic.codes import DISGUISES, SCENARIOS, SELECTIONS, SIM_COLUMNS
from training.synthetic.config import _check_int, _check_window, _deep_merge, _default_config, load_generator_config
from training.synthetic.declarations import _declarations
from training.synthetic.entities import _add_entities
from training.synthetic.inspection import _add_labels
from training.synthetic.lines import _add_physics, _add_text, _add_values, _expand_lines
from training.synthetic.output import _assemble, arriving_lines
from training.synthetic.world import _build_world

__all__ = [
    "DISGUISES",
    "SCENARIOS",
    "SELECTION_COLUMNS",
    "SELECTIONS",
    "SIM_COLUMNS",
    "arriving_lines",
    "generate_manifest",
    "load_generator_config",
]


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def generate_manifest(
    n_rows: int,
    seed: int,
    start: date | str,
    end: date | str,
    config: Mapping | None = None,
    reference: ReferenceTables | None = None,
) -> pd.DataFrame:
    """Simulate labelled US import manifest lines with disguised controlled goods.

    Parameters
    ----------
    n_rows : int
        Number of manifest lines, > 0.
    seed : int
        Seed of the single random generator, >= 0; the same arguments give the same frame.
    start, end : date or str
        First and last declaration date (ISO ``YYYY-MM-DD`` strings accepted), start < end.
    config : mapping, optional
        Generator configuration deep-merged over the default (see :func:`load_generator_config`),
        so a full configuration or a partial override both work.
    reference : ReferenceTables, optional
        Reference tables; the packaged ones by default.

    Returns
    -------
    DataFrame
        ``n_rows`` lines sorted by ``declared_at`` then ``declaration_id``: the canonical columns
        of :data:`features.schema.CANONICAL_COLUMNS`, then :data:`SELECTION_COLUMNS`, what customs
        knows about why it inspected a line (``selection_probability``: ``inspection.random_share``
        for exploration lines, 1.0 for targeted ones, missing when uninspected; ``selected_by``:
        "exploration", "targeted" or missing), then :data:`SIM_COLUMNS`, the simulation's ground
        truth (``sim_fraud`` 0/1 on every line, ``sim_commodity`` the hidden
        good or "none", ``sim_form`` the controlled good carried, hidden or declared, or "none",
        ``sim_disguise`` none / true_value / undervalued, ``sim_scenario``, ``sim_cover_family``
        of the declared code or "none", ``sim_route`` lane or route id, ``sim_network`` fraud
        network or -1, ``sim_selection`` none / random / targeted).

    Raises
    ------
    TypeError
        When a parameter has the wrong type.
    ValueError
        When a parameter is out of range or the configuration is inconsistent.
    """
    n_rows = _check_int(n_rows, "n_rows", 1)
    seed = _check_int(seed, "seed", 0)
    start_day, end_day = _check_window(start, end)
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping or None, got {type(config).__name__}")
    cfg = _deep_merge(_default_config(), config or {})
    world = _build_world(cfg, reference if reference is not None else load_reference(), start_day, end_day)
    rng = np.random.default_rng(seed)
    decls = _add_entities(world, rng, _declarations(world, rng, n_rows), n_rows)
    lines = _expand_lines(world, rng, decls)
    for step in (_add_physics, _add_values, _add_text, _add_labels):
        lines = step(world, rng, lines)
    return _assemble(world, lines)
