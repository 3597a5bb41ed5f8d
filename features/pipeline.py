"""The one feature pipeline from manifest line to model features, and its JSON form.

Training fits :func:`build_feature_pipeline` once; batch scoring, the API and retraining load the
same fitted pipeline from its JSON spec with :func:`pipeline_from_spec`. Only the transformer
classes named in :data:`TRANSFORMERS` can be rebuilt: a spec never names code to import.
"""

from __future__ import annotations

import pandas as pd
from sklearn.pipeline import Pipeline

from features.transformers import (
    CategoryEncoder,
    DeclaredHSFeatures,
    RouteFeatures,
    ValueFeatures,
    WeightFeatures,
)

TRANSFORMERS = {cls.__name__: cls for cls in (
    WeightFeatures, ValueFeatures, DeclaredHSFeatures, RouteFeatures, CategoryEncoder,
)}


def build_feature_pipeline(reference_dir: str | None = None, min_count: int = 20,
                           min_category_count: int = 5) -> Pipeline:
    """Return the unfitted feature pipeline.

    Parameters
    ----------
    reference_dir : str, optional
        Folder of the reference tables; the packaged tables by default.
    min_count : int
        Lines an HS prefix needs for its own typical value per kg.
    min_category_count : int
        Occurrences a category needs to get its own code (rarer ones are "unknown").
    """
    steps = [
        ("weight", WeightFeatures()),
        ("value", ValueFeatures(min_count=min_count, reference_dir=reference_dir)),
        ("declared_hs", DeclaredHSFeatures(reference_dir=reference_dir)),
        ("route", RouteFeatures(reference_dir=reference_dir)),
    ]
    categorical = tuple(c for _, step in steps for c in step.categorical_outputs)
    steps.append(("encode", CategoryEncoder(columns=categorical, min_count=min_category_count)))
    return Pipeline(steps)


def model_features(pipeline: Pipeline) -> list[str]:
    """Ordered names of the model's input columns: numeric features, then category codes."""
    numeric = [name for _, step in pipeline.steps for name in step.numeric_features_]
    return numeric + categorical_features(pipeline)


def categorical_features(pipeline: Pipeline) -> list[str]:
    """Names of the integer category-code columns (categorical for LightGBM)."""
    return [name for _, step in pipeline.steps if isinstance(step, CategoryEncoder)
            for name in step.code_columns]


def feature_groups(pipeline: Pipeline) -> dict[str, str]:
    """Reason group ("price", "route", "weight", ...) of every model feature."""
    groups: dict[str, str] = {}
    for _, step in pipeline.steps:
        groups.update(step.feature_groups())
        groups.update({f"{column}_code": step.reason_group for column in step.categorical_outputs})
    return {name: groups[name] for name in model_features(pipeline)}


def pipeline_to_spec(pipeline: Pipeline) -> list[dict]:
    """JSON-compatible state of a fitted pipeline: one entry per step, in order."""
    return [{"name": name, **step.get_state()} for name, step in pipeline.steps]


def pipeline_from_spec(spec: list[dict]) -> Pipeline:
    """Rebuild a fitted pipeline from :func:`pipeline_to_spec` output.

    Raises
    ------
    ValueError
        When a step names a class that is not a known feature transformer.
    """
    steps = []
    for entry in spec:
        cls = TRANSFORMERS.get(entry.get("class"))
        if cls is None:
            raise ValueError(f"feature spec names an unknown transformer {entry.get('class')!r}")
        steps.append((entry["name"], cls.from_state(entry)))
    return Pipeline(steps)


def transform_features(pipeline: Pipeline, lines: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply a fitted pipeline.

    Returns
    -------
    derived : DataFrame
        The input columns plus every derived column (used to write reasons).
    X : DataFrame
        The model's input matrix, columns in :func:`model_features` order.
    """
    derived = pipeline.transform(lines)
    return derived, derived[model_features(pipeline)]
