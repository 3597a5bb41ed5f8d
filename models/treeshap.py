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

Decisions follow LightGBM's rules exactly (``tree.h``): numerical splits send NaN to zero unless the
split's missing type is NaN, then the default direction for NaN (missing type NaN) or for zero
(missing type Zero, ``|x| <= 1e-35``), else ``x <= threshold`` goes left; categorical splits send NaN,
negative values and values beyond int32 right, else left when ``int(x)`` is in the split's set.
Features reach the trees as ``booster.predict`` hands them over (pandas categoricals as their codes).

Trees with a leaf whose table would exceed ``max_table_values`` are left to ``pred_contrib`` (one call
for those trees); so is a model with several trees per iteration (multiclass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

_ZERO = 1e-35  # LightGBM's kZeroThreshold
_INT32_LIMIT = 2.0**31


@dataclass
class _Leaf:
    tree: int
    value: float
    conditions: list[tuple[int, bool, int]]  # (global split index, goes left, position of its feature)
    features: list[int]  # unique features on the path, by position
    zero_fractions: list[float]


def _shapley_table(values: np.ndarray, zero_fractions: np.ndarray) -> np.ndarray:
    """Tables of leaves that share a path length ``k``: (leaves, 2**k, k) contributions.

    ``values`` (leaves,), ``zero_fractions`` (leaves, k); row ``p`` of a table is the pattern whose
    bit ``j`` is ``o_j``.
    """
    leaves, k = zero_fractions.shape
    patterns = 1 << k
    ones = ((np.arange(patterns)[:, None] >> np.arange(k)) & 1).astype("float64")  # (2**k, k)
    weights = np.array([math.factorial(s) * math.factorial(k - 1 - s) / math.factorial(k) for s in range(k)])
    table = np.empty((leaves, patterns, k))
    z = zero_fractions[:, None, :]  # (leaves, 1, k)
    for i in range(k):
        # Coefficients of prod_{j != i} (z_j + o_j t), by power of t.
        coefficients = np.zeros((leaves, patterns, k))
        coefficients[:, :, 0] = 1.0
        for j in range(k):
            if j == i:
                continue
            shifted = np.zeros_like(coefficients)
            shifted[:, :, 1:] = coefficients[:, :, :-1] * ones[None, :, j, None]
            coefficients = coefficients * z[:, :, j, None] + shifted
        table[:, :, i] = values[:, None] * (ones[None, :, i] - z[:, :, i]) * (coefficients @ weights)
    return table


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

    def __init__(self, booster, max_table_values: int = 1 << 18):
        self.booster = booster
        dump = booster.dump_model()
        self.feature_names = list(dump["feature_names"])
        self.num_features = len(self.feature_names)
        self.bias = 0.0
        self.fallback_trees: list[int] = []
        trees = dump["tree_info"]
        if dump.get("num_tree_per_iteration", 1) != 1:
            self.fallback_trees = [t["tree_index"] for t in trees]
            trees = []
        splits: list[dict] = []
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
    def _read_tree(tree: int, root: dict, first_split: int) -> tuple[list[dict], list[_Leaf], float]:
        """(splits, leaves, expected value) of one tree; split indices start at ``first_split``."""
        if "split_index" not in root:  # a single leaf: LightGBM adds its value to the bias only
            return [], [], float(root["leaf_value"])
        splits: list[dict] = []
        leaves: list[_Leaf] = []
        total = float(root["internal_count"])
        expected = 0.0

        def count(node: dict) -> float:
            return float(node["internal_count"] if "split_index" in node else node["leaf_count"])

        def visit(node: dict, path: list[tuple[int, bool, int, float]]) -> None:
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

    def _compile_splits(self, splits: list[dict]) -> None:
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
        depth = max((len(leaf.conditions) for leaf in leaves), default=0)
        count = len(leaves)
        dummy = len(self.split_feature)  # a column of decisions that always goes left
        self.condition_split = np.full((count, depth), dummy, dtype="int64")
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
        for k in np.unique(widths):
            rows = np.flatnonzero(widths == k)
            values = np.array([leaves[r].value for r in rows])
            zero = np.array([leaves[r].zero_fractions for r in rows], dtype="float64").reshape(len(rows), k)
            built = _shapley_table(values, zero).reshape(len(rows), -1)
            for row, table in zip(rows, built, strict=True):
                self.tables[self.table_offset[row] : self.table_offset[row] + table.size] = table
        # Path elements (leaf, position), ordered by feature so that a sum per feature is one reduceat.
        element_leaf = np.repeat(np.arange(count), widths)
        element_position = np.concatenate([np.arange(k) for k in widths]) if count else np.zeros(0, dtype="int64")
        element_feature = np.array([f for leaf in leaves for f in leaf.features], dtype="int64")
        order = np.argsort(element_feature, kind="stable")
        self.element_leaf = element_leaf[order]
        self.element_base = (self.table_offset[element_leaf] + element_position)[order]
        self.element_width = widths[element_leaf][order]
        features = element_feature[order]
        self.element_starts = np.flatnonzero(np.r_[True, features[1:] != features[:-1]]) if len(features) else features
        self.element_features = features[self.element_starts] if len(features) else features

    # ------------------------------------------------------------------ attributions

    def feature_matrix(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Features as ``booster.predict`` hands them to the trees (float64, pandas categoricals as codes)."""
        if isinstance(X, pd.DataFrame):
            from lightgbm.basic import _data_from_pandas  # the conversion predict itself applies

            X = _data_from_pandas(X, "auto", "auto", self.booster.pandas_categorical)[0]
        return np.asarray(X, dtype="float64")

    def _goes_left(self, values: np.ndarray) -> np.ndarray:
        """(lines, splits + 1) decisions, the last column always left (padding of the paths)."""
        x = values[:, self.split_feature]
        nan = np.isnan(x)
        numeric = np.where(nan & ~self.missing_nan, 0.0, x)
        default = (self.missing_zero & (np.abs(numeric) <= _ZERO)) | (self.missing_nan & nan)
        left = np.where(default, self.default_left, numeric <= self.threshold)
        if self.categorical.any():
            columns = np.flatnonzero(self.categorical)
            raw = x[:, columns]
            valid = np.isfinite(raw) & (raw >= 0) & (raw < _INT32_LIMIT)
            category = np.where(valid, np.trunc(np.where(valid, raw, 0)), 0).astype("int64")
            inside = valid & (category < self.category_left.shape[1])
            rows = self.category_row[columns]
            left[:, columns] = inside & self.category_left[rows, np.where(inside, category, 0)]
        return np.concatenate([left, np.ones((len(values), 1), dtype=bool)], axis=1)

    def _block(self, values: np.ndarray) -> np.ndarray:
        left = self._goes_left(values)
        patterns = np.zeros((len(values), len(self.full_pattern)), dtype="int64")
        for column in range(self.condition_split.shape[1]):
            missed = left[:, self.condition_split[:, column]] != self.condition_left[:, column]
            patterns |= missed.astype("int64") << self.condition_bit[:, column]
        patterns = self.full_pattern & ~patterns
        looked_up = self.tables[self.element_base + patterns[:, self.element_leaf] * self.element_width]
        out = np.zeros((len(values), self.num_features + 1))
        if looked_up.shape[1]:
            out[:, self.element_features] = np.add.reduceat(looked_up, self.element_starts, axis=1)
        out[:, -1] = self.bias
        return out

    def contributions(self, X: pd.DataFrame | np.ndarray, block_rows: int = 512, num_threads: int = 1) -> np.ndarray:
        """TreeSHAP values as ``booster.predict(X, pred_contrib=True)`` gives them: (lines, features + 1)."""
        values = self.feature_matrix(X)
        out = np.zeros((len(values), self.num_features + 1))
        for start in range(0, len(values), block_rows):
            out[start : start + block_rows] = self._block(values[start : start + block_rows])
        for tree in self.fallback_trees:
            out += np.asarray(
                self.booster.predict(values, pred_contrib=True, start_iteration=tree, num_iteration=1, num_threads=num_threads)
            )
        return out
