"""LightGBM's TreeSHAP (``pred_contrib``) from per-leaf tables: the same values, by table lookups.

Reasons are defined on LightGBM's path-dependent TreeSHAP (``booster.predict(X, pred_contrib=True)``).
Its value for a leaf depends on a line only through which of that leaf's path conditions the line
satisfies. Per unique feature ``j`` on the path from the root to a leaf, with ``z_j`` the product of
the cover fractions (child count / parent count) of the path's splits on ``j`` and ``o_j`` in {0, 1}
whether the line takes every one of them, the leaf of value ``v`` adds to feature ``i``::

    v * (o_i - z_i) * sum over S within the path's other features of
        |S|! (k - |S| - 1)! / k! * prod_{j in S} o_j * prod_{j not in S} z_j

(``k`` features on the path; LightGBM's recursion computes the same sum with its extend / unwind
steps, a repeated feature merged into one element exactly so). ``o`` takes one of ``2**k`` patterns,
so each leaf gets a table of ``2**k`` rows of ``k`` values, built once per model (the FastTreeSHAP v2
idea, Yang 2022), and a line's attribution is: the decision of every split, each leaf's pattern,
one lookup per (leaf, path feature), and a sum per feature. The bias column is each tree's expected
value (leaf values weighted by leaf counts), as LightGBM writes it.

Both steps are loops over leaves and lines compiled with numba (whole-array numpy steps moved every
(line, path element) through memory and were only about twice as fast as ``pred_contrib``); lines
go in blocks, leaf by leaf, so a leaf's table stays in cache. Sums run in another order than
LightGBM's, so values agree to rounding (about 1e-15), not bit for bit.

Decisions follow LightGBM's rules exactly (``tree.h``): numerical splits send NaN to zero unless the
split's missing type is NaN, then the default direction for NaN (missing type NaN) or for zero
(missing type Zero, ``|x| <= 1e-35``), else ``x <= threshold`` goes left; categorical splits send NaN,
values whose ``int(x)`` (truncated) is negative and values beyond int32 right, else left when
``int(x)`` is in the split's set (so -0.5 is category 0).
Features reach the trees as ``booster.predict`` hands them over (pandas categoricals as their codes).

Trees with a leaf whose table would exceed ``max_table_values`` are left to ``pred_contrib`` (one call
for those trees); so is a model with several trees per iteration (multiclass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import lightgbm as lgb

_ZERO = 1e-35  # LightGBM's kZeroThreshold
_INT32_LIMIT = 2.0**31


@dataclass
class _Leaf:
    tree: int
    value: float
    conditions: list[tuple[int, bool, int]]  # (global split index, goes left, position of its feature)
    features: list[int]  # unique features on the path, by position
    zero_fractions: list[float]


class TreeShapTables:
    """Per-leaf TreeSHAP tables of a LightGBM booster; :meth:`contributions` equals ``pred_contrib``.

    Parameters
    ----------
    booster : lightgbm.Booster
        A binary or regression model (one tree per iteration); others are explained by
        ``pred_contrib`` whole.
    max_table_values : int
        Largest table of one leaf (``2**k * k`` values); trees with a larger one use ``pred_contrib``.
    """

    def __init__(self, booster: lgb.Booster, max_table_values: int = 1 << 18):
        self.booster = booster
        dump = booster.dump_model()
        self.feature_names = list(dump["feature_names"])
        self.num_features = len(self.feature_names)
        self.bias = 0.0
        self.fallback_trees: list[int] = []
        trees = dump["tree_info"]
        # Several trees per iteration (multiclass): pred_contrib whole (its output has a block per class).
        self.whole_model = dump.get("num_tree_per_iteration", 1) != 1
        if self.whole_model:
            trees = []
        splits: list[dict[str, Any]] = []
        leaves: list[_Leaf] = []
        for info in trees:
            tree_splits, tree_leaves, expected = self._read_tree(info["tree_index"], info["tree_structure"], len(splits))
            if any((1 << len(leaf.features)) * len(leaf.features) > max_table_values for leaf in tree_leaves):
                self.fallback_trees.append(info["tree_index"])
                continue
            splits.extend(tree_splits)
            leaves.extend(tree_leaves)
            self.bias += expected
        self._compile_splits(splits)
        self._compile_leaves(leaves)

    # ------------------------------------------------------------------ reading the model

    @staticmethod
    def _read_tree(tree: int, root: dict[str, Any], first_split: int) -> tuple[list[dict[str, Any]], list[_Leaf], float]:
        """(splits, leaves, expected value) of one tree; split indices start at ``first_split``."""
        if "split_index" not in root:  # a single leaf: LightGBM adds its value to the bias only
            return [], [], float(root["leaf_value"])
        splits: list[dict[str, Any]] = []
        leaves: list[_Leaf] = []
        total = float(root["internal_count"])
        expected = 0.0

        def count(node: dict[str, Any]) -> float:
            return float(node["internal_count"] if "split_index" in node else node["leaf_count"])

        def visit(node: dict[str, Any], path: list[tuple[int, bool, int, float]]) -> None:
            nonlocal expected
            if "split_index" not in node:
                features: list[int] = []
                zero: list[float] = []
                conditions = []
                for split, left, feature, fraction in path:
                    if feature in features:
                        position = features.index(feature)
                        zero[position] = fraction * zero[position]
                    else:
                        position = len(features)
                        features.append(feature)
                        zero.append(fraction)
                    conditions.append((split, left, position))
                leaves.append(_Leaf(tree, float(node["leaf_value"]), conditions, features, zero))
                expected += count(node) / total * float(node["leaf_value"])
                return
            split = first_split + len(splits)
            splits.append(node)
            for child, left in ((node["left_child"], True), (node["right_child"], False)):
                visit(child, [*path, (split, left, int(node["split_feature"]), count(child) / count(node))])

        visit(root, [])
        return splits, leaves, expected

    def _compile_splits(self, splits: list[dict[str, Any]]) -> None:
        n = len(splits)
        self.split_feature = np.array([int(s["split_feature"]) for s in splits], dtype="int64")
        self.categorical = np.array([s["decision_type"] == "==" for s in splits], dtype=bool)
        self.default_left = np.array([bool(s["default_left"]) for s in splits], dtype=bool)
        self.missing_nan = np.array([s["missing_type"] == "NaN" for s in splits], dtype=bool)
        self.missing_zero = np.array([s["missing_type"] == "Zero" for s in splits], dtype=bool)
        self.threshold = np.array([0.0 if c else float(s["threshold"]) for s, c in zip(splits, self.categorical)])
        # Categorical sets as a (categorical splits, largest category + 1) table of "goes left".
        sets = [[int(v) for v in str(s["threshold"]).split("||")] for s, c in zip(splits, self.categorical) if c]
        width = max((max(values) for values in sets), default=-1) + 1
        self.category_left = np.zeros((len(sets), max(width, 1)), dtype=bool)
        for row, values in enumerate(sets):
            self.category_left[row, values] = True
        self.category_row = np.full(n, -1, dtype="int64")
        self.category_row[self.categorical] = np.arange(len(sets))

    def _compile_leaves(self, leaves: list[_Leaf]) -> None:
        depth = max((len(leaf.conditions) for leaf in leaves), default=1)
        count = len(leaves)
        self.condition_split = np.zeros((count, depth), dtype="int64")
        self.condition_left = np.ones((count, depth), dtype=bool)
        self.condition_bit = np.zeros((count, depth), dtype="int64")
        widths = np.array([len(leaf.features) for leaf in leaves], dtype="int64")
        for row, leaf in enumerate(leaves):
            for column, (split, left, position) in enumerate(leaf.conditions):
                self.condition_split[row, column] = split
                self.condition_left[row, column] = left
                self.condition_bit[row, column] = position
        self.full_pattern = (np.int64(1) << widths) - 1
        # One flat array of every leaf's table; a leaf's row p, column j is at offset + p * k + j.
        sizes = (np.int64(1) << widths) * widths
        self.table_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype("int64")
        self.tables = np.zeros(int(sizes.sum()))
        zero = np.array([z for leaf in leaves for z in leaf.zero_fractions], dtype="float64")
        values = np.array([leaf.value for leaf in leaves], dtype="float64")
        starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype("int64")
        _fill_tables(widths, starts, zero, values, self.table_offset, self.tables)
        self.widths = widths
        self.condition_count = np.array([len(leaf.conditions) for leaf in leaves], dtype="int64")
        self.leaf_feature_start = starts
        self.leaf_features = np.array([f for leaf in leaves for f in leaf.features], dtype="int64")

    # ------------------------------------------------------------------ attributions

    def feature_matrix(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Features as ``booster.predict`` hands them to the trees (float64, pandas categoricals as codes)."""
        if isinstance(X, pd.DataFrame):
            from lightgbm.basic import _data_from_pandas  # the conversion predict itself applies

            X = _data_from_pandas(X, "auto", "auto", self.booster.pandas_categorical)[0]
        return np.asarray(X, dtype="float64")

    def contributions(self, X: pd.DataFrame | np.ndarray, num_threads: int = 1) -> np.ndarray:
        """TreeSHAP values as ``booster.predict(X, pred_contrib=True)`` gives them: (lines, features + 1).

        ``num_threads``: LightGBM threads for the trees left to ``pred_contrib``.
        """
        values = np.ascontiguousarray(self.feature_matrix(X))
        if self.whole_model:
            return np.asarray(self.booster.predict(values, pred_contrib=True, num_threads=num_threads))
        out = np.zeros((len(values), self.num_features + 1))
        _add_contributions(
            values,
            self.split_feature,
            self.threshold,
            self.categorical,
            self.default_left,
            self.missing_nan,
            self.missing_zero,
            self.category_row,
            self.category_left,
            self.condition_split,
            self.condition_left,
            self.condition_bit,
            self.condition_count,
            self.full_pattern,
            self.table_offset,
            self.widths,
            self.leaf_feature_start,
            self.leaf_features,
            self.tables,
            self.bias,
            out,
        )
        for tree in self.fallback_trees:
            out += np.asarray(
                self.booster.predict(values, pred_contrib=True, start_iteration=tree, num_iteration=1, num_threads=num_threads)
            )
        return out


@numba.njit(cache=True, nogil=True)
def _add_contributions(
    values: np.ndarray,
    split_feature: np.ndarray,
    threshold: np.ndarray,
    categorical: np.ndarray,
    default_left: np.ndarray,
    missing_nan: np.ndarray,
    missing_zero: np.ndarray,
    category_row: np.ndarray,
    category_left: np.ndarray,
    condition_split: np.ndarray,
    condition_left: np.ndarray,
    condition_bit: np.ndarray,
    condition_count: np.ndarray,
    full_pattern: np.ndarray,
    table_offset: np.ndarray,
    widths: np.ndarray,
    leaf_feature_start: np.ndarray,
    leaf_features: np.ndarray,
    tables: np.ndarray,
    bias: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; tested through TreeShapTables.contributions
    """Every split's decision by LightGBM's rules, then per leaf and line its pattern's table row added.

    Lines go in blocks, leaf by leaf within a block, so that a leaf's table stays in cache while the
    block's lines look it up.
    """
    block = 256
    categories = category_left.shape[1]
    left = np.empty((block, len(split_feature)), dtype=np.bool_)
    for start in range(0, values.shape[0], block):
        stop = min(start + block, values.shape[0])
        for row in range(start, stop):
            for split in range(len(split_feature)):
                x = values[row, split_feature[split]]
                if categorical[split]:
                    if np.isnan(x) or x <= -1.0 or x >= _INT32_LIMIT:  # int(x) < 0, or beyond int32
                        goes_left = False
                    else:
                        category = int(x)
                        goes_left = category < categories and category_left[category_row[split], category]
                elif np.isnan(x) and missing_nan[split]:
                    goes_left = default_left[split]
                else:
                    if np.isnan(x):
                        x = 0.0
                    if missing_zero[split] and abs(x) <= _ZERO:
                        goes_left = default_left[split]
                    else:
                        goes_left = x <= threshold[split]
                left[row - start, split] = goes_left
        for leaf in range(len(full_pattern)):
            width = widths[leaf]
            first = leaf_feature_start[leaf]
            for row in range(start, stop):
                pattern = full_pattern[leaf]
                for step in range(condition_count[leaf]):
                    if left[row - start, condition_split[leaf, step]] != condition_left[leaf, step]:
                        pattern &= ~(np.int64(1) << condition_bit[leaf, step])
                cell = table_offset[leaf] + pattern * width
                for position in range(width):
                    out[row, leaf_features[first + position]] += tables[cell + position]
        for row in range(start, stop):
            out[row, out.shape[1] - 1] += bias


@numba.njit(cache=True, nogil=True)
def _fill_tables(  # pragma: no cover - compiled
    widths: np.ndarray,
    starts: np.ndarray,
    zero_fractions: np.ndarray,
    values: np.ndarray,
    table_offset: np.ndarray,
    tables: np.ndarray,
) -> None:
    """Each leaf's table: row ``pattern`` (bit ``j`` = ``o_j``), column ``i`` its contribution to the
    ``i``-th feature of the path, ``v (o_i - z_i) sum_s s! (k - 1 - s)! / k! e_s``, with ``e_s`` the
    coefficient of ``t**s`` in the product over the path's other features of ``z_j + o_j t``."""
    for leaf in range(len(widths)):
        k = widths[leaf]
        z = zero_fractions[starts[leaf] : starts[leaf] + k]
        weights = np.empty(k)
        for size in range(k):
            weights[size] = math.gamma(size + 1) * math.gamma(k - size) / math.gamma(k + 1)
        coefficients = np.empty(k)
        for pattern in range(1 << k):
            for i in range(k):
                coefficients[:] = 0.0
                coefficients[0] = 1.0
                terms = 1
                for j in range(k):
                    if j == i:
                        continue
                    one = (pattern >> j) & 1
                    for size in range(terms, 0, -1):
                        coefficients[size] = coefficients[size] * z[j] + coefficients[size - 1] * one
                    coefficients[0] *= z[j]
                    terms += 1
                total = 0.0
                for size in range(k):
                    total += weights[size] * coefficients[size]
                o = (pattern >> i) & 1
                tables[table_offset[leaf] + pattern * k + i] = values[leaf] * (o - z[i]) * total
