"""serve/batch.py's pass 3 ranks whole days a group at a time: the groups, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from serve.batch import day_groups


def test_days_are_grouped_in_order_up_to_the_line_budget():
    days = np.array([5, 3, 3, 4, 9, 5, 5, 3, 10, 10])  # 3: 3 lines, 4: 1, 5: 3, 9: 1, 10: 2

    assert day_groups(days, 4) == [(3, 4), (5, 9), (10, 10)]
    assert day_groups(days, 10) == [(3, 10)]


def test_a_day_larger_than_the_budget_is_a_group_of_its_own():
    days = np.array([1, 2, 2, 2, 2, 3])

    assert day_groups(days, 2) == [(1, 1), (2, 2), (3, 3)]
    assert day_groups(days, 1) == [(1, 1), (2, 2), (3, 3)]


def test_no_days_no_groups_and_the_budget_is_checked():
    assert day_groups(np.array([], dtype="int32"), 5) == []
    with pytest.raises(ValueError, match="group_lines must be >= 1, got 0"):
        day_groups(np.array([1]), 0)
