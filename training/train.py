"""Fit the feature pipeline and the LightGBM models; build the bundle spec.

This module is pure computation: DataFrames and settings in, boosters and a JSON-compatible spec
out. MLflow logging lives in :mod:`training.tracking`; file I/O in the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from features.history import HistoryColumns, HistoryFeatures
from features.pipeline import (
    build_feature_pipeline,
    categorical_features,
    feature_groups,
    model_features,
    pipeline_to_spec,
    transform_features,
)
from features.reference import load_reference
from features.schema import LABEL_COLUMNS
from models.channels import channels_for_lines
from models.distribution import RISK_BIN_EDGES, risk_counts, shares
from models.predict import apply_calibration, disguise_risk
from models.scope import OriginCheck
from training.config import TrainConfig
from training.metrics import ranking_metrics
from training.split import InsufficientDataError, TimeSplit, exploration_checks, labelled, time_split

SPEC_VERSION = 1


@dataclass
class TrainResult:
    """Everything a training run produced.

    Attributes
    ----------
    booster, commodity_booster : lightgbm.Booster
        Risk model and suspected-commodity model (None when too few confirmed cases).
    spec : dict
        The bundle's feature spec (pipeline state, calibration, thresholds, summary).
    metrics : dict
        ``valid_*`` and ``test_*`` ranking metrics of the calibrated score on labelled lines.
    split : TimeSplit
        The periods used.
    test_scores : DataFrame
        Labelled test lines with ``risk_score`` (for plots).
    importance : Series
        Gain importance per feature.
    """

    booster: lgb.Booster
    commodity_booster: lgb.Booster | None
    spec: dict
    metrics: dict[str, float]
    split: TimeSplit
    test_scores: pd.DataFrame
    importance: pd.Series


def lightgbm_params(config: TrainConfig, objective: str = "binary", **extra) -> dict:
    """LightGBM parameters, deterministic for ``config.seed`` and ``config.num_threads``."""
    return {
        "objective": objective,
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_child_samples": config.min_child_samples,
        "feature_fraction": config.feature_fraction,
        "lambda_l2": config.lambda_l2,
        "seed": config.seed,
        "num_threads": config.num_threads,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
        **extra,
    }


def fit_risk_model(
    X_train, y_train, X_valid, y_valid, categorical: list[str], config: TrainConfig, weight: np.ndarray | None = None
) -> lgb.Booster:
    """Binary LightGBM with class weighting and early stopping on the validation period.

    ``weight`` (one per training line, e.g. inverse selection probabilities) enters the loss and the
    class balance, which compares weighted totals; without it every line counts once, as before.
    """
    counts = np.ones(len(y_train)) if weight is None else np.asarray(weight, dtype="float64")
    positives = max(float(counts[np.asarray(y_train) == 1].sum()), 1.0)
    params = lightgbm_params(config, scale_pos_weight=(float(counts.sum()) - positives) / positives, metric="average_precision")
    train_set = lgb.Dataset(X_train, y_train, weight=weight, categorical_feature=categorical, free_raw_data=False)
    valid_set = lgb.Dataset(X_valid, y_valid, categorical_feature=categorical, reference=train_set)
    return lgb.train(
        params,
        train_set,
        num_boost_round=config.max_rounds,
        valid_sets=[valid_set],
        callbacks=[early_stopping_after(min(config.min_rounds, config.max_rounds), config.early_stopping_rounds)],
    )


def early_stopping_after(min_rounds: int, patience: int) -> Callable:
    """Early stopping on the validation metric that never keeps fewer than ``min_rounds`` trees.

    A validation period with few positives can peak after a handful of trees by chance; a model of
    8 trees has a few hundred distinct outputs and ties most lines on one score, which no ranking
    by capacity can use. The best iteration is sought from ``min_rounds`` on; ``patience`` rounds
    without improvement after it stop training.
    """
    best = {"score": -np.inf, "iteration": 0}

    def callback(env: lgb.callback.CallbackEnv) -> None:
        iteration = env.iteration + 1
        _, _, score, higher_better = env.evaluation_result_list[0][:4]
        score = score if higher_better else -score
        if iteration < min_rounds:
            return
        if score > best["score"]:
            best.update(score=score, iteration=iteration, results=env.evaluation_result_list)
        if iteration - best["iteration"] >= patience or iteration == env.end_iteration:
            raise lgb.callback.EarlyStopException(best["iteration"] - 1, best["results"])

    callback.order = 30
    return callback


def drop_party_history(X: pd.DataFrame, groups: dict[str, str], share: float, seed: int) -> pd.DataFrame:
    """Copy of ``X`` with every party-history feature missing on a random ``share`` of rows.

    A new office scores lines whose parties its store has never seen; a model that only ever saw
    parties with a full history leans on it and ranks unknown parties by accident. Training on some
    lines as if their parties were unknown makes it learn what the goods themselves show.
    """
    if not 0 <= share < 1:
        raise ValueError(f"history_dropout must be in [0, 1), got {share}")
    party = [name for name in X.columns if groups.get(name, "").endswith("_history")]
    if share == 0 or not party:
        return X
    dropped = np.random.default_rng(seed).random(len(X)) < share
    X = X.copy()
    X.loc[dropped, party] = np.nan
    return X


def fit_platt_calibration(raw_scores: np.ndarray, y: np.ndarray) -> dict:
    """Platt scaling of raw scores: class weighting distorts probabilities, so map them back.

    A monotone two-parameter map keeps the model's ranking (no ties, unlike isotonic steps).
    """
    model = LogisticRegression(C=1e6, max_iter=1000).fit(raw_scores.reshape(-1, 1), y)
    return {"method": "platt", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}


MIN_EXPLORATION_POSITIVES = 5  # below this the exploration hit rate is too noisy to anchor the risk


def exploration_prevalence(lines: pd.DataFrame) -> tuple[float, int, int] | None:
    """Misdeclared share of the labelled exploration checks among ``lines`` (rate, checks, hits).

    Exploration checks are picked at random among all lines (``selected_by == "exploration"``), so
    their hit rate estimates the share of misdeclared lines in the whole flow, unlike targeted
    inspections. None when there are none or fewer than :data:`MIN_EXPLORATION_POSITIVES` hits.
    """
    picked = exploration_checks(lines)
    hits = int(picked["misdeclared"].sum())
    if hits < MIN_EXPLORATION_POSITIVES:
        return None
    return hits / len(picked), len(picked), hits


def anchor_to_population(calibration: dict, raw_scores: np.ndarray, prevalence: float) -> dict:
    """Shift the Platt intercept so that the mean risk over ``raw_scores`` equals ``prevalence``.

    Platt scaling fitted on inspected lines gives the probability *for a line like those inspected*:
    a selected, high-prevalence population, so an ordinary line's risk reads far too high. Shifting
    the intercept (a prior-shift correction) keeps the ranking and makes the average over every line
    of the period match the share of misdeclared lines the random checks found.
    """
    raw = np.asarray(raw_scores, dtype="float64")
    low, high = -50.0, 50.0
    for _ in range(100):  # bisection: the mean risk increases with the intercept
        middle = (low + high) / 2
        mean = apply_calibration(raw, {**calibration, "b": middle}).mean()
        low, high = (middle, high) if mean < prevalence else (low, middle)
    return {**calibration, "b": (low + high) / 2}


def population_calibration(calibration: dict, raw_scores: np.ndarray, period: pd.DataFrame, earlier: pd.DataFrame) -> dict:
    """The calibration with its ``basis``: anchored on exploration checks when they allow it.

    The validation period's exploration checks are used, or every exploration check up to its end
    when the period alone has too few hits; without them the risk stays a probability among
    inspected lines (``basis`` says so and the README explains what that means).
    """
    estimate = exploration_prevalence(period) or exploration_prevalence(pd.concat([earlier, period]))
    if estimate is None:
        return {**calibration, "basis": "inspected"}
    rate, checks, hits = estimate
    return {
        **anchor_to_population(calibration, raw_scores, rate),
        "basis": "exploration",
        "exploration_checks": checks,
        "exploration_hits": hits,
        "population_rate": rate,
    }


def fit_commodity_model(
    X: pd.DataFrame, found: pd.Series, categorical: list[str], commodities: list[str], config: TrainConfig
) -> lgb.Booster | None:
    """Multiclass model of the commodity found on confirmed misdeclarations (None if too few)."""
    known = found.isin(commodities)
    if known.sum() < 20 or found[known].nunique() < 2:
        return None
    y = found[known].map({c: i for i, c in enumerate(commodities)}).to_numpy()
    params = lightgbm_params(config, objective="multiclass", num_class=len(commodities))
    data = lgb.Dataset(X[known.to_numpy()], y, categorical_feature=categorical)
    return lgb.train(params, data, num_boost_round=config.commodity_rounds)


def hide_labels_outside(lines: pd.DataFrame, known: pd.Index) -> pd.DataFrame:
    """Copy of ``lines`` with the outcomes of every line not in ``known`` removed.

    Features of all periods are computed in one transform: history features are point-in-time
    (strictly earlier lines, outcomes only after the label delay). Outcomes of the validation and
    test periods are hidden as well, as they would not be in the history store of a model trained
    at the end of the training period; so no held-out label reaches any feature.
    """
    hidden = lines.copy()
    outside = ~hidden.index.isin(known)
    for column in LABEL_COLUMNS:
        if column in hidden.columns:
            hidden[column] = hidden[column].mask(outside)
    return hidden


def train_model(
    lines: pd.DataFrame,
    config: TrainConfig,
    reference_dir: str | None = None,
    split: TimeSplit | None = None,
    extra_categorical: tuple[str, ...] = (),
    weight_column: str | None = None,
    history_entities: tuple[str, ...] = (),
    history_of: Callable[[HistoryFeatures, pd.DataFrame], HistoryColumns] | None = None,
) -> TrainResult:
    """Train the risk and commodity models on validated manifest lines.

    The feature pipeline is fitted on every line of the training period (labelled or not: typical
    values per kg and vocabularies need no labels); the models on its inspected lines only. Early
    stopping, calibration and channel thresholds use the validation period; the test period is only
    measured.

    Parameters
    ----------
    lines : DataFrame
        Validated canonical lines with labels (``inspected``, ``misdeclared``, ``found_commodity``).
    config : TrainConfig
    reference_dir : str, optional
        Folder of the reference tables.
    split : TimeSplit, optional
        Periods to use (their frames must be row subsets of ``lines``, same index); by default
        :func:`~training.split.time_split` with the config's fractions and label delay.
    extra_categorical : tuple of str
        Further input columns the pipeline encodes as categories (e.g. from a mapped source schema).
    weight_column : str, optional
        Column of ``lines`` holding a training weight per line (retraining puts inverse selection
        probabilities there); only the risk model's training lines are weighted, validation,
        calibration and thresholds are not.
    history_entities : tuple of str
        Further input columns the pipeline keeps a party-like history for (e.g. a goods profile).
    history_of : callable, optional
        ``(fitted history step, lines) -> HistoryColumns``: the lines' history features computed
        elsewhere (``train --engine spark`` computes them on Spark by the same functions); by
        default the pipeline computes them from the lines themselves.
    """
    if split is None:
        lines = lines.reset_index(drop=True)
        split = time_split(lines, config.valid_fraction, config.test_fraction, config.label_delay_days)
    elif not lines.index.is_unique:
        raise ValueError("lines must have a unique index when a split is given")
    train_l, valid_l, test_l = (labelled(p) for p in (split.train, split.valid, split.test))
    for name, period in (("train", train_l), ("valid", valid_l)):
        if period["misdeclared"].nunique() < 2:
            raise InsufficientDataError(f"the {name} period needs both misdeclared and clean inspected lines")
    pipeline = build_feature_pipeline(
        reference_dir,
        min_count=config.min_hs_count,
        min_category_count=config.min_category_count,
        label_delay_days=config.label_delay_days,
        extra_categorical=extra_categorical,
        history_entities=history_entities,
        tenure_unknown_days=config.tenure_unknown_days,
    ).fit(split.train)
    categorical = categorical_features(pipeline)
    hidden = hide_labels_outside(lines, split.train.index)
    step = next(s for _, s in pipeline.steps if isinstance(s, HistoryFeatures))
    derived_all, X_all = transform_features(pipeline, hidden, None if history_of is None else history_of(step, hidden))
    X_train, X_valid, X_test = (X_all.loc[period.index] for period in (train_l, valid_l, test_l))
    y_train, y_valid = train_l["misdeclared"].to_numpy("int64"), valid_l["misdeclared"].to_numpy("int64")
    weight = None if weight_column is None else train_l[weight_column].to_numpy("float64")
    groups = feature_groups(pipeline)
    booster = fit_risk_model(
        drop_party_history(X_train, groups, config.history_dropout, config.seed),
        y_train,
        X_valid,
        y_valid,
        categorical,
        config,
        weight,
    )
    valid_raw = booster.predict(X_all.loc[split.valid.index], raw_score=True)
    calibration = population_calibration(
        fit_platt_calibration(booster.predict(X_valid, raw_score=True), y_valid), valid_raw, split.valid, split.train
    )
    # The validation window's risk distribution, kept to compare later batches with (drift, reports),
    # as the scorer gives it (0 for lines declared under a controlled code); channels no longer use
    # thresholds: they are day quotas by rank (models.channels).
    valid_scope = OriginCheck.from_pipeline(pipeline).evaluate(derived_all.loc[split.valid.index])
    all_valid_scores = disguise_risk(valid_raw, calibration, valid_scope.controlled)
    valid_quantiles = {f"q{q:g}": float(np.quantile(all_valid_scores, q / 100)) for q in (50, 90, 93, 95, 98, 99)}
    commodities = load_reference(reference_dir).commodities
    commodity_features = [f for f in X_train.columns if groups[f] in config.commodity_feature_groups]
    commodity_booster = fit_commodity_model(
        X_train[commodity_features],
        train_l["found_commodity"],
        [c for c in categorical if c in commodity_features],
        commodities,
        config,
    )

    metrics, test_scores = {}, test_l.copy()
    for prefix, frame, X in (("valid", valid_l, X_valid), ("test", test_l, X_test)):
        # An empty test period is allowed (window_split): the outer window is measured elsewhere.
        scores = apply_calibration(booster.predict(X, raw_score=True), calibration) if len(X) else np.empty(0)
        metrics.update(
            {
                f"{prefix}_{k}": v
                for k, v in ranking_metrics(
                    frame["misdeclared"].to_numpy("int64"),
                    scores,
                    config.inspection_rates,
                    frame["declared_value_usd"].to_numpy("float64"),
                ).items()
            }
        )
        if prefix == "test":
            test_scores["risk_score"] = scores
    metrics["best_iteration"] = float(booster.best_iteration)
    spec = {
        "spec_version": SPEC_VERSION,
        "pipeline": pipeline_to_spec(pipeline),
        "model_features": model_features(pipeline),
        "categorical_features": categorical,
        "feature_groups": groups,
        "commodity_features": commodity_features,
        "calibration": calibration,
        "valid_risk_quantiles": valid_quantiles,
        "valid_risk_histogram": {"edges": list(RISK_BIN_EDGES), "shares": shares(risk_counts(all_valid_scores))},
        "channel_rates": {"red": config.red_rate, "yellow": config.yellow_rate},
        "commodities": commodities,
        "training": {
            "periods": split.boundaries,
            "train_labelled_lines": len(train_l),
            "train_positives": int(y_train.sum()),
            "best_iteration": booster.best_iteration,
            "settings": config.as_dict(),
        },
    }
    importance = pd.Series(booster.feature_importance("gain"), index=booster.feature_name()).sort_values(ascending=False)
    test_scores["channel"] = channels_for_lines(
        test_scores, test_scores["risk_score"].to_numpy(), {"red": config.red_rate, "yellow": config.yellow_rate}
    )
    return TrainResult(booster, commodity_booster, spec, metrics, split, test_scores, importance)
