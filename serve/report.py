"""The batch report: where a scored batch's red and yellow lines are, what drives them, whether it
looks like the model's validation window, and what was quarantined.

:class:`BatchReport` accumulates counts part by part (batch scoring never holds the file; the
triage load reads it in chunks), serialises to JSON (the triage database keeps it per batch) and
is rendered by :func:`render_report` into one self-contained HTML file (inline CSS and SVG, no
script, no external asset) or by the triage service inside its own pages.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from features.schema import REASON_COLUMN, quarantine_rules
from models.distribution import RISK_BIN_EDGES, risk_counts, shares
from models.reasons import NO_STATED_FACT, reason_topic
from serve.charts import CHANNEL_ORDER, hbar_chart, heatmap, histogram_compare, stacked_columns

FLAGGED = ("red", "yellow")
TOP_PORTS = 8
TOP_TOPICS = 12
TOP_CELLS = 8
TOP_RULES = 12
REPORT_VERSION = 1
NO_PORT = "none"


def _key(*parts: object) -> str:
    return "|".join(str(p) for p in parts)


@dataclass
class BatchReport:
    """Counts of a scored batch, added part by part.

    Parameters
    ----------
    cover_codes : dict
        HS prefix (4 or 6 digits) -> description of the codes the reference data name as covers
        (``ReferenceTables.cover_codes``); lines under them fill the export country × cover code cells.

    Attributes
    ----------
    lines, quarantined : int
        Scored lines and quarantined rows.
    channels : Counter
        Lines per ``port|day|channel`` (port of discharge, declaration day).
    topics : Counter
        Flagged lines citing each reason topic (:func:`models.reasons.reason_topic`; a line counts once per topic).
    risk : ndarray
        Lines per risk bin (:data:`models.distribution.RISK_BIN_EDGES`).
    cells, cells_flagged : Counter
        Lines and flagged lines per ``export country|cover code``.
    rules : Counter
        Quarantined rows per broken rule (:func:`features.schema.quarantine_rules`).
    models : Counter
        Lines per model version.
    """

    cover_codes: dict[str, str]
    lines: int = 0
    quarantined: int = 0
    channels: Counter = field(default_factory=Counter)
    topics: Counter = field(default_factory=Counter)
    risk: np.ndarray = field(default_factory=lambda: np.zeros(len(RISK_BIN_EDGES) - 1, dtype="int64"))
    cells: Counter = field(default_factory=Counter)
    cells_flagged: Counter = field(default_factory=Counter)
    rules: Counter = field(default_factory=Counter)
    models: Counter = field(default_factory=Counter)

    def _cover_of(self, hs: pd.Series) -> pd.Series:
        """The cover code (longest listed prefix, 6 then 4 digits) of each line; missing for other codes."""
        found = pd.Series(pd.NA, index=hs.index, dtype="object")
        for length in (6, 4):
            prefix = hs.str.slice(0, length)
            found = found.where(found.notna(), prefix.where(prefix.isin(list(self.cover_codes))))
        return found

    def add_scored(self, frame: pd.DataFrame) -> None:
        """Count scored lines (columns ``declared_at``, ``port_of_discharge``, ``channel``, ``risk_score``,
        ``reasons``, ``export_country``, ``hs_code``, ``model_version``); ``frame`` is not changed."""
        if frame.empty:
            return
        self.lines += len(frame)
        flagged = frame["channel"].isin(FLAGGED)
        facts = pd.DataFrame(
            {
                "port": frame["port_of_discharge"].astype("object").where(frame["port_of_discharge"].notna(), NO_PORT),
                "day": pd.to_datetime(frame["declared_at"]).dt.strftime("%Y-%m-%d"),
                "channel": frame["channel"].astype(str),
                "export": frame["export_country"].astype(str),
                "cover": self._cover_of(frame["hs_code"].astype(str)),
                "flagged": flagged.astype("int64"),
            }
        )
        for (port, day, channel), count in facts.groupby(["port", "day", "channel"]).size().items():
            self.channels[_key(port, day, channel)] += int(count)
        cells = facts.dropna(subset=["cover"]).groupby(["export", "cover"])["flagged"].agg(["size", "sum"])
        for (export, cover), row in cells.iterrows():
            self.cells[_key(export, cover)] += int(row["size"])
            if row["sum"]:
                self.cells_flagged[_key(export, cover)] += int(row["sum"])
        self.risk += risk_counts(frame["risk_score"].to_numpy(dtype="float64"))
        self.models.update({str(k): int(v) for k, v in frame["model_version"].value_counts().items()})
        for text in frame.loc[flagged, "reasons"]:
            phrases = [p.strip() for p in text.split("|") if p.strip()] if isinstance(text, str) else []
            self.topics.update({reason_topic(p) for p in phrases or [NO_STATED_FACT]})

    def add_quarantine(self, frame: pd.DataFrame) -> None:
        """Count quarantined rows by the rules they break (column ``quarantine_reason``)."""
        self.quarantined += len(frame)
        for reason in frame[REASON_COLUMN]:
            self.rules.update(set(quarantine_rules(reason)))

    def to_dict(self) -> dict:
        """JSON-compatible counts (what the triage database keeps per batch)."""
        return {
            "version": REPORT_VERSION,
            "cover_codes": self.cover_codes,
            "lines": self.lines,
            "quarantined": self.quarantined,
            "risk": self.risk.tolist(),
            **{name: dict(getattr(self, name)) for name in ("channels", "topics", "cells", "cells_flagged", "rules", "models")},
        }

    @classmethod
    def from_dict(cls, data: dict) -> BatchReport:
        """The report saved by :meth:`to_dict`."""
        if data.get("version") != REPORT_VERSION:
            raise ValueError(f"batch report version must be {REPORT_VERSION}, got {data.get('version')!r}")
        report = cls(
            cover_codes=dict(data["cover_codes"]),
            lines=int(data["lines"]),
            quarantined=int(data["quarantined"]),
            risk=np.asarray(data["risk"], dtype="int64"),
        )
        for name in ("channels", "topics", "cells", "cells_flagged", "rules", "models"):
            setattr(report, name, Counter(data[name]))
        return report

    # --- what the report shows ---------------------------------------------------------------

    def channel_totals(self) -> dict[str, int]:
        """Lines per channel."""
        totals = Counter()
        for key, count in self.channels.items():
            totals[key.rsplit("|", 1)[1]] += count
        return {channel: int(totals.get(channel, 0)) for channel in CHANNEL_ORDER}

    def port_table(self) -> list[dict]:
        """Per port of discharge: lines per channel and days, most flagged first."""
        rows: dict[str, Counter] = {}
        days: dict[str, set] = {}
        for key, count in self.channels.items():
            port, day, channel = key.split("|")
            rows.setdefault(port, Counter())[channel] += count
            days.setdefault(port, set()).add(day)
        table = [
            {
                "port": port,
                **{c: int(counts.get(c, 0)) for c in CHANNEL_ORDER},
                "lines": int(sum(counts.values())),
                "days": len(days[port]),
            }
            for port, counts in rows.items()
        ]
        return sorted(table, key=lambda r: (-(r["red"] + r["yellow"]), -r["lines"], r["port"]))

    def flagged_by_day(self, port: str) -> tuple[list[str], dict[str, list[int]]]:
        """Days of the batch and red / yellow lines of ``port`` on each."""
        days = sorted({key.split("|")[1] for key in self.channels})
        stacks = {channel: [int(self.channels.get(_key(port, day, channel), 0)) for day in days] for channel in FLAGGED}
        return days, stacks

    def top_cells(self) -> tuple[list[str], list[str]]:
        """Export countries and cover codes of the cells with the most flagged lines (then lines)."""
        ranked = sorted(self.cells, key=lambda k: (-self.cells_flagged.get(k, 0), -self.cells[k], k))
        exports, covers = [], []
        for key in ranked:
            export, cover = key.split("|")
            if export not in exports and len(exports) < TOP_CELLS:
                exports.append(export)
            if cover not in covers and len(covers) < TOP_CELLS:
                covers.append(cover)
        return exports, covers


def reference_shares(spec: dict) -> list[float] | None:
    """The validation window's shares per risk bin from a bundle spec, when it has them with these bins."""
    histogram = spec.get("valid_risk_histogram")
    if not histogram or list(histogram.get("edges", [])) != list(RISK_BIN_EDGES):
        return None
    return [float(v) for v in histogram["shares"]]


def report_charts(report: BatchReport, reference: list[float] | None) -> dict:
    """The charts and tables of a report (what the templates place)."""
    ports = report.port_table()
    by_port = []
    for row in ports[:TOP_PORTS]:
        days, stacks = report.flagged_by_day(row["port"])
        by_port.append(
            (row["port"], stacked_columns(days, stacks, f"days-{row['port']}", f"Red and yellow lines per day at {row['port']}"))
        )
    topics = report.topics.most_common(TOP_TOPICS)
    rules = report.rules.most_common(TOP_RULES)
    exports, covers = report.top_cells()
    cell = {tuple(k.split("|")): v for k, v in report.cells.items()}
    cell_flagged = {tuple(k.split("|")): v for k, v in report.cells_flagged.items()}
    return {
        "totals": report.channel_totals(),
        "ports": ports,
        "by_port": by_port,
        "topics": hbar_chart([t for t, _ in topics], [c for _, c in topics], "topics", "Flagged lines citing each kind of reason")
        if topics
        else None,
        "risk": histogram_compare(
            list(RISK_BIN_EDGES),
            shares(report.risk),
            reference,
            "risk",
            "Risk scores of this batch against the model's validation window",
        ),
        "cells": heatmap(
            exports,
            covers,
            cell_flagged,
            cell,
            "cells",
            "Flagged lines by export country and cover code",
            column_labels=report.cover_codes,
        )
        if exports
        else None,
        "rules": hbar_chart(
            [r for r, _ in rules],
            [c for _, c in rules],
            "rules",
            "Quarantined rows per broken rule",
            unit="rows",
            class_="bar quarantine",
        )
        if rules
        else None,
        "has_reference": reference is not None,
    }


def _environment() -> Environment:
    return Environment(loader=PackageLoader("serve", "templates"), autoescape=select_autoescape(["html"]))


def render_report(report: BatchReport, reference: list[float] | None, source: str, generated: datetime | None = None) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG; nothing fetched, no script)."""
    css = resources.files("serve").joinpath("static", "triage.css").read_text(encoding="utf-8")
    generated = generated or datetime.now(UTC)
    template = _environment().get_template("report.html")
    return template.render(
        r=report,
        charts=report_charts(report, reference),
        source=source,
        css=Markup(css),
        generated=generated.strftime("%Y-%m-%d %H:%M UTC"),
        # Raw text inside <script type="application/json">: only "</" could end it early.
        data=Markup(json.dumps(report.to_dict(), sort_keys=True).replace("</", "<\\/")),
    )


def write_report(path: str | Path, html: str) -> Path:
    """Write ``html`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(path)
    return path
