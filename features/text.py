"""Goods-description features: keyword groups, vagueness and disagreement with the declared code.

Vague descriptions ("metal parts", "sample") and descriptions whose words do not match the declared
HS code are published risk indicators. The keyword lists live in
``features/data/description_keywords.yaml``; the fitted transformer keeps a copy of them.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Self, TypedDict

import numpy as np
import pandas as pd
import yaml
from sklearn.utils.validation import check_is_fitted

from features.transformers import BoolArray, FeatureTransformer, FloatArray, as_text, with_columns


class Keywords(TypedDict):
    """The keyword file: word lists per group, vague words, the group each cover family expects."""

    groups: dict[str, list[str]]
    vague: list[str]
    expected_group_by_cover_family: dict[str, str]


def load_keywords(path: str | None = None) -> Keywords:
    """Read the keyword file (the packaged one by default)."""
    if path is None:
        text = resources.files("features").joinpath("data", "description_keywords.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    keywords: Keywords = yaml.safe_load(text)
    return keywords


def word_pattern(words: list[str]) -> str:
    """Regex matching any of ``words`` as whole words (longest first, escaped)."""
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return rf"\b(?:{alternatives})\b"


class DescriptionFeatures(FeatureTransformer):
    """Keyword-group flags, word counts, vagueness and HS–description mismatch.

    Must follow :class:`~features.transformers.DeclaredHSFeatures` (it reads ``cover_family``).

    Parameters
    ----------
    keywords_path : str, optional
        YAML file of keyword groups; the packaged file by default.
    """

    _fitted_attributes = ("groups_", "vague_", "expected_group_", "numeric_features_")
    reason_group = "description"

    def __init__(self, keywords_path: str | None = None):
        self.keywords_path = keywords_path

    def fit(self, X: pd.DataFrame, y: object = None) -> Self:
        keywords = load_keywords(self.keywords_path)
        self.groups_ = {name: list(words) for name, words in keywords["groups"].items()}
        self.vague_ = list(keywords["vague"])
        self.expected_group_ = dict(keywords["expected_group_by_cover_family"])
        self.numeric_features_ = ["desc_missing", "desc_words", "desc_vague_share", "desc_is_vague", "desc_hs_mismatch"] + [
            f"desc_mentions_{g}" for g in self.groups_
        ]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self)
        text = as_text(X, "description", "").str.lower()
        words = text.str.count(r"[a-z]+").to_numpy(dtype="float64")
        vague = text.str.count(word_pattern(self.vague_)).to_numpy(dtype="float64")
        mentions = {g: text.str.contains(word_pattern(w), regex=True).to_numpy() for g, w in self.groups_.items()}
        any_group = np.logical_or.reduce(list(mentions.values()))
        new = {
            "desc_missing": (words == 0).astype("float64"),
            "desc_words": words,
            "desc_vague_share": np.divide(vague, words, out=np.full(len(words), np.nan), where=words > 0),
            "desc_is_vague": ((words == 0) | ((vague > 0) & ~any_group)).astype("float64"),
            "desc_hs_mismatch": self._mismatch(X, mentions, any_group),
        }
        new.update({f"desc_mentions_{g}": flags.astype("float64") for g, flags in mentions.items()})
        return with_columns(X, new)

    def _mismatch(self, X: pd.DataFrame, mentions: dict[str, BoolArray], any_group: BoolArray) -> FloatArray:
        """1 when a cover-coded line's words name goods but not the declared ones; NaN off cover codes."""
        family = as_text(X, "cover_family", "none")
        expected = family.map(self.expected_group_)
        result = np.full(len(X), np.nan)
        for group, flags in mentions.items():
            rows = (expected == group).to_numpy()
            result[rows] = (any_group[rows] & ~flags[rows]).astype("float64")
        return result
