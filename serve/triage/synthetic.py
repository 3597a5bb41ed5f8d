"""Synthetic scored batches for demos, benchmarks and tests of the triage queue.

They follow the scored batch contract (canonical columns plus the five score columns) without a
trained model, so that the queue can be exercised at any size. Scores here are random, not
predictions.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from features.schema import CANONICAL_COLUMNS

US_PORTS = ("USLAX", "USLGB", "USHOU", "USSAV", "USNYC")
_COVERS = (
    ("790111", "zinc ingots 99.995%", 2.9, "PC"),
    ("780110", "refined lead ingots", 1.9, "PC"),
    ("720221", "ferrosilicon lumps", 1.4, "KG"),
    ("830629", "brass statuettes, decorative", 9.0, "PC"),
    ("691390", "ceramic ornaments", 4.0, "PC"),
    ("800110", "tin ingots", 33.0, "PC"),
)
_ROUTES = (
    ("CN", "CN", "CNSHA", None),
    ("CN", "TH", "THLCH", "HKHKG"),
    ("CN", "MX", "MXZLO", None),
    ("CN", "VN", "VNHPH", "CNYTN"),
    ("TH", "TH", "THBKK", None),
    ("VN", "VN", "VNSGN", None),
)
_REASONS = {
    "antimony": ("package weight fits antimony ingots", "declared value far below antimony price"),
    "gallium": ("value per kg far below gallium price", "small air shipment of dense metal"),
    "germanium": ("value per kg far below germanium price", "shipper ships optical-grade metal"),
    "rare_earth": ("declared as ceramics but weight fits magnets", "origin produces rare earths"),
}
_COMMON_REASONS = (
    "routed through a diversion hub",
    "shipper's first line into the US",
    "declared goods unusual for this consignee",
)


def _reasons(rng: np.random.Generator, commodity: str, flagged: bool) -> str:
    if not flagged:
        return ""
    pool = list(_REASONS[commodity]) + list(_COMMON_REASONS)
    chosen = rng.choice(len(pool), size=int(rng.integers(1, 4)), replace=False)
    return " | ".join(pool[i] for i in sorted(chosen))


def synthetic_scored_batch(
    n: int,
    seed: int = 0,
    ports: tuple[str, ...] = US_PORTS,
    declared_at: date = date(2025, 6, 2),
    red_share: float = 0.02,
    yellow_share: float = 0.05,
    id_prefix: str = "SYN",
) -> pd.DataFrame:
    """Return ``n`` scored manifest lines following the scored batch contract.

    Parameters
    ----------
    n : int
        Number of lines.
    seed : int
        Seed of the random generator (same seed, same frame).
    ports : tuple of str
        Ports of discharge to spread the lines over.
    declared_at : date
        Declaration date of every line.
    red_share, yellow_share : float
        Approximate shares of red and yellow lines.
    id_prefix : str
        Prefix of the declaration ids, so that two batches can be made disjoint.

    Returns
    -------
    DataFrame
        Canonical columns (labels empty) plus risk_score, channel, reasons, suspected_commodity
        and model_version.
    """
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 1, n)
    channel = np.where(score >= 1 - red_share, "red", np.where(score >= 1 - red_share - yellow_share, "yellow", "green"))
    risk = np.where(
        channel == "red",
        0.8 + 0.2 * rng.uniform(0, 1, n),
        np.where(channel == "yellow", 0.5 + 0.3 * rng.uniform(0, 1, n), 0.5 * rng.uniform(0, 1, n)),
    )
    commodity = np.array(sorted(_REASONS))[rng.integers(0, len(_REASONS), n)]
    flagged = channel != "green"
    cover = rng.integers(0, len(_COVERS), n)
    route = rng.integers(0, len(_ROUTES), n)
    gross = np.round(rng.uniform(200, 24_000, n), 1)
    unit_value = np.array([_COVERS[i][2] for i in cover]) * rng.uniform(0.6, 1.3, n)
    frame = pd.DataFrame(
        {
            "declaration_id": [f"{id_prefix}{seed:03d}-{i:07d}" for i in range(n)],
            "line_no": 1,
            "declared_at": declared_at.isoformat(),
            "hs_code": [_COVERS[i][0] for i in cover],
            "description": [_COVERS[i][1] for i in cover],
            "gross_weight_kg": gross,
            "net_weight_kg": np.round(gross * 0.97, 1),
            "quantity": np.round(gross * 0.97, 1),
            "quantity_unit": "KG",
            "packages": rng.integers(1, 60, n),
            "package_type": np.array(["pallet", "case", "bag", "crate"])[rng.integers(0, 4, n)],
            "containers": rng.integers(0, 3, n),
            "declared_value_usd": np.round(gross * 0.97 * unit_value, 2),
            "origin_country": [_ROUTES[i][0] for i in route],
            "export_country": [_ROUTES[i][1] for i in route],
            "port_of_loading": [_ROUTES[i][2] for i in route],
            "port_of_discharge": np.array(ports)[rng.integers(0, len(ports), n)],
            "transshipment_ports": [_ROUTES[i][3] for i in route],
            "transport_mode": "sea",
            "shipper_id": [f"SHP{i:04d}" for i in rng.integers(0, max(n // 20, 5), n)],
            "consignee_id": [f"CNE{i:04d}" for i in rng.integers(0, max(n // 30, 5), n)],
            "importer_id": [f"IMP{i:04d}" for i in rng.integers(0, max(n // 30, 5), n)],
            "declarant_id": [f"DCL{i:03d}" for i in rng.integers(0, 40, n)],
            "inspected": None,
            "misdeclared": None,
            "found_commodity": None,
            "risk_score": np.round(risk, 4),
            "channel": channel,
            "reasons": [_reasons(rng, c, f) for c, f in zip(commodity, flagged, strict=True)],
            "suspected_commodity": np.where(flagged, commodity, "none"),
            "model_version": "misdeclare/synthetic",
        }
    )
    return frame[list(CANONICAL_COLUMNS) + ["risk_score", "channel", "reasons", "suspected_commodity", "model_version"]]
