import math

import numpy as np
import pytest

from rewardlab.eval import compare


def test_paired_difference_by_hand():
    a = [1, 1, 1, 0]
    b = [0, 1, 0, 0]
    # d = [1, 0, 1, 0]: mean 0.5, sd (ddof=1) = sqrt(1/3), se = sqrt(1/3)/2
    d = compare.paired_difference(a, b)
    half = 1.959963984540054 * math.sqrt(1 / 3) / 2
    assert d["a"] == 0.75 and d["b"] == 0.25 and d["n"] == 4
    assert d["diff"] == pytest.approx(0.5)
    assert d["low"] == pytest.approx(0.5 - half) and d["high"] == pytest.approx(0.5 + half)
    assert compare.verdict(d) == compare.UNRESOLVED  # 0.5 - 0.566 < 0


def test_verdicts():
    ones, zeros = np.ones(50), np.zeros(50)
    mixed = np.tile([1.0, 0.0], 25)
    assert compare.verdict(compare.paired_difference(ones, mixed)) == compare.REPRODUCED
    assert compare.verdict(compare.paired_difference(zeros, mixed)) == compare.CONTRADICTED
    assert compare.verdict(compare.paired_difference(mixed, mixed)) == compare.UNRESOLVED


def test_bad_input_raises():
    with pytest.raises(ValueError, match="equal-length"):
        compare.paired_difference([1, 0], [1])
    with pytest.raises(ValueError, match="confidence"):
        compare.paired_difference([1, 0], [0, 1], confidence=1.5)
