"""The one feature pipeline from manifest line to model features, and its JSON form.

Training fits :func:`build_feature_pipeline` once; batch scoring, the API, evaluation and retraining
load the same fitted pipeline from its JSON spec with :func:`pipeline_from_spec`. Only the
transformer classes named in :data:`TRANSFORMERS` can be rebuilt: a spec never names code to import.

Most steps are row-wise; the history step also needs the lines seen before (``past``), which is why
this is a small pipeline class rather than ``sklearn.pipeline.Pipeline`` (whose ``transform`` cannot
pass extra data to one step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from sklearn.utils.validation import check_is_fitted

from features.history import HistoryFeatures, Past
from features.text import DescriptionFeatures
from features.transformers import (
    CategoryEncoder,
    DeclaredHSFeatures,
    FeatureStep,
    RouteFeatures,
    ValueFeatures,
    WeightFeatures,
)

StepSpec = dict[str, Any]
"""One step of a pipeline spec (JSON): its name plus the step's :data:`~features.transformers.TransformerState`."""

TRANSFORMERS: dict[str, type[FeatureStep]] = {
    cls.__name__: cls
    for cls in (
        WeightFeatures,
        ValueFeatures,
        DeclaredHSFeatures,
        DescriptionFeatures,
        RouteFeatures,
        HistoryFeatures,
        CategoryEncoder,
    )
}


class FeaturePipeline:
    """Named steps applied in order; :class:`HistoryFeatures` steps also receive ``past`` lines.

    Parameters
    ----------
    steps : sequence of (name, transformer)
    """

    def __init__(self, steps: Sequence[tuple[str, FeatureStep]]):
        self.steps = list(steps)

    @property
    def named_steps(self) -> dict[str, FeatureStep]:
        """Steps by name."""
        return dict(self.steps)

    def fit(self, lines: pd.DataFrame) -> FeaturePipeline:
        """Fit each step on the output of the previous ones (history: the lines are their own past)."""
        frame = lines
        for _, step in self.steps:
            frame = step.fit(frame).transform(frame)
        return self

    def transform(self, lines: pd.DataFrame, past: Past = None) -> pd.DataFrame:
        """All derived columns of ``lines``; ``past`` is every line seen before (or a history store:
        see :meth:`HistoryFeatures.transform`)."""
        frame = lines
        for _, step in self.steps:
            check_is_fitted(step)
            frame = step.transform(frame, past) if isinstance(step, HistoryFeatures) else step.transform(frame)
        return frame


def build_feature_pipeline(
    reference_dir: str | None = None,
    min_count: int = 20,
    min_category_count: int = 5,
    label_delay_days: int = 30,
    extra_categorical: tuple[str, ...] = (),
    history_entities: tuple[str, ...] = (),
    tenure_unknown_days: int = 0,
) -> FeaturePipeline:
    """Return the unfitted feature pipeline.

    Parameters
    ----------
    reference_dir : str, optional
        Folder of the reference tables; the packaged tables by default.
    min_count : int
        Lines an HS prefix needs for its own typical value per kg.
    min_category_count : int
        Occurrences a category needs to get its own code (rarer ones are "unknown").
    label_delay_days : int
        Days before an inspection outcome may feed an entity's misdeclaration rate.
    extra_categorical : tuple of str
        Further input columns to use as categories (e.g. a source schema's office or procedure).
    history_entities : tuple of str
        Further input columns with a party-like history (e.g. a source schema's goods profile).
    tenure_unknown_days : int
        Parties first seen within this many days of the history's first line have unknown tenure.
    """
    steps: list[tuple[str, FeatureStep]] = [
        ("weight", WeightFeatures()),
        ("value", ValueFeatures(min_count=min_count, reference_dir=reference_dir)),
        ("declared_hs", DeclaredHSFeatures(reference_dir=reference_dir)),
        ("description", DescriptionFeatures()),
        ("route", RouteFeatures(reference_dir=reference_dir)),
        (
            "history",
            HistoryFeatures(
                label_delay_days=label_delay_days,
                reference_dir=reference_dir,
                extra_entities=tuple(history_entities),
                tenure_unknown_days=tenure_unknown_days,
            ),
        ),
    ]
    categorical = tuple(c for _, step in steps for c in step.categorical_outputs) + tuple(extra_categorical)
    steps.append(("encode", CategoryEncoder(columns=categorical, min_count=min_category_count)))
    return FeaturePipeline(steps)


def model_features(pipeline: FeaturePipeline) -> list[str]:
    """Ordered names of the model's input columns: numeric features, then category codes."""
    numeric = [name for _, step in pipeline.steps for name in step.numeric_features_]
    return numeric + categorical_features(pipeline)


def categorical_features(pipeline: FeaturePipeline) -> list[str]:
    """Names of the integer category-code columns (categorical for LightGBM)."""
    return [name for _, step in pipeline.steps if isinstance(step, CategoryEncoder) for name in step.code_columns]


def feature_groups(pipeline: FeaturePipeline) -> dict[str, str]:
    """Reason group ("price", "route", "weight", "history", ...) of every model feature."""
    groups: dict[str, str] = {}
    for _, step in pipeline.steps:
        groups.update(step.feature_groups())
        groups.update({f"{column}_code": step.reason_group for column in step.categorical_outputs})
    return {name: groups.get(name, "other") for name in model_features(pipeline)}


def pipeline_to_spec(pipeline: FeaturePipeline) -> list[StepSpec]:
    """JSON-compatible state of a fitted pipeline: one entry per step, in order."""
    return [{"name": name, **step.get_state()} for name, step in pipeline.steps]


def pipeline_from_spec(spec: Sequence[Mapping[str, Any]]) -> FeaturePipeline:
    """Rebuild a fitted pipeline from :func:`pipeline_to_spec` output.

    Raises
    ------
    ValueError
        When a step names a class that is not a known feature transformer.
    """
    steps: list[tuple[str, FeatureStep]] = []
    for entry in spec:
        cls = TRANSFORMERS.get(str(entry.get("class")))
        if cls is None:
            raise ValueError(f"feature spec names an unknown transformer {entry.get('class')!r}")
        steps.append((entry["name"], cls.from_state(entry)))
    return FeaturePipeline(steps)


def transform_features(pipeline: FeaturePipeline, lines: pd.DataFrame, past: Past = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply a fitted pipeline.

    Returns
    -------
    derived : DataFrame
        The input columns plus every derived column (used to write reasons).
    X : DataFrame
        The model's input matrix, columns in :func:`model_features` order.
    """
    derived = pipeline.transform(lines, past)
    return derived, derived[model_features(pipeline)]
