"""Reference tables grounded in the domain facts (HS codes, prices, countries, ports, control dates).

The tables live as CSV files in ``features/data`` so that prices and codes are data, never literals in
code. They are read on demand (never at import time) and returned as one immutable bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

_TABLES = ("hs_codes", "target_goods", "countries", "ports", "control_dates")
_STRING_COLUMNS = {"hs_prefix", "hs6", "us_hts10", "iso2", "locode", "country"}


@dataclass(frozen=True)
class ReferenceTables:
    """The reference tables the feature pipeline and the synthetic generator share.

    Attributes
    ----------
    hs_codes : DataFrame
        One row per HS prefix (4 or 6 digits): role (target, cover), commodity, cover family,
        typical USD/kg band and density.
    target_goods : DataFrame
        Price bands of the controlled goods per form and year, with density and package size.
    countries : DataFrame
        ISO alpha-2 code, diversion-hub flag and the target goods each country produces.
    ports : DataFrame
        UN/LOCODE, country and name of the ports used by the routes.
    control_dates : DataFrame
        Date, commodities and kind of each export-control measure.
    """

    hs_codes: pd.DataFrame
    target_goods: pd.DataFrame
    countries: pd.DataFrame
    ports: pd.DataFrame
    control_dates: pd.DataFrame

    @property
    def commodities(self) -> list[str]:
        """Target commodities in a stable order (antimony, gallium, germanium, rare_earth)."""
        return sorted(self.target_goods["commodity"].unique().tolist())

    @property
    def price_bands(self) -> pd.DataFrame:
        """USD/kg band per price band name: the widest low/high over the forms and years in it."""
        grouped = self.target_goods.groupby("band", sort=True)
        return pd.DataFrame(
            {
                "commodity": grouped["commodity"].first(),
                "usd_per_kg_low": grouped["usd_per_kg_low"].min(),
                "usd_per_kg_high": grouped["usd_per_kg_high"].max(),
            }
        )

    @property
    def diversion_hubs(self) -> frozenset[str]:
        """Countries the facts name as transit points for the controlled goods."""
        return frozenset(self.countries.loc[self.countries["diversion_hub"] == 1, "iso2"])

    @property
    def controlling_countries(self) -> frozenset[str]:
        """Countries whose export controls the disguises evade (FACTS: China)."""
        return frozenset(self.countries.loc[self.countries["controls_exports"] == 1, "iso2"])

    @property
    def cover_codes(self) -> dict[str, str]:
        """Description of each HS prefix (4 or 6 digits) the facts name as a cover for the controlled goods."""
        covers = self.hs_codes[self.hs_codes["role"] == "cover"]
        return dict(zip(covers["hs_prefix"], covers["description"], strict=True))

    def code_goods(self) -> dict[str, list[str]]:
        """Controlled goods each six-digit code covers (``target_goods.csv``; 811292: gallium, germanium)."""
        table = self.target_goods[["hs6", "commodity"]].dropna().drop_duplicates()
        return {str(code): sorted(group["commodity"]) for code, group in table.groupby("hs6")}

    @cached_property
    def code_bands(self) -> dict[str, tuple[float, float]]:
        """Reference USD/kg band (low, high) per HS prefix that has one (read once per tables)."""
        banded = self.hs_codes.dropna(subset=["usd_per_kg_low", "usd_per_kg_high"])
        lows = banded["usd_per_kg_low"].to_numpy(np.float64).tolist()
        highs = banded["usd_per_kg_high"].to_numpy(np.float64).tolist()
        return {str(prefix): (low, high) for prefix, low, high in zip(banded["hs_prefix"], lows, highs, strict=True)}

    def declared_band(self, hs_code: str) -> tuple[str, float, float] | None:
        """(prefix, low, high) USD/kg of the longest prefix (6, then 4 digits) of ``hs_code`` with a band."""
        for length in (6, 4):
            prefix = str(hs_code)[:length]
            if prefix in self.code_bands:
                return (prefix, *self.code_bands[prefix])
        return None

    def producers(self, commodity: str) -> frozenset[str]:
        """Countries with production capacity for ``commodity``."""
        produces = self.countries["produces"].fillna("").str.split(";")
        return frozenset(self.countries.loc[produces.map(lambda p: commodity in p), "iso2"])


def _read_table(directory: Path | None, name: str) -> pd.DataFrame:
    dtypes = {column: "string" for column in _STRING_COLUMNS}
    if directory is None:
        with resources.files("features").joinpath("data", f"{name}.csv").open("rb") as handle:
            return pd.read_csv(handle, dtype=dtypes)
    return pd.read_csv(directory / f"{name}.csv", dtype=dtypes)


def load_reference(directory: str | Path | None = None) -> ReferenceTables:
    """Read the reference tables.

    Parameters
    ----------
    directory : str or Path, optional
        Folder holding the CSV files; the tables shipped with the package by default.

    Returns
    -------
    ReferenceTables
    """
    folder = Path(directory) if directory is not None else None
    tables = {name: _read_table(folder, name) for name in _TABLES}
    tables["control_dates"]["date"] = pd.to_datetime(tables["control_dates"]["date"])
    return ReferenceTables(**tables)
