import math

import pytest

from experiments.stats import method_score, paired_difference, sign_flip_p


def test_method_score_leaves_out_bios_without_claims():
    assert method_score([1.0, None, 0.0, 0.5]) == pytest.approx(0.5)
    assert method_score([1.0, None, 0.0], idx=[0, 0, 1]) == 1.0  # a resample with repeats
    assert math.isnan(method_score([None, None]))


def test_sign_flip_p_by_hand():
    # 3 positive differences: only the all-plus and all-minus patterns are as extreme: 2 / 8
    assert sign_flip_p([0.1, 0.2, 0.3]) == pytest.approx(2 / 8)
    # 5 seeds can never go below 2/32
    assert sign_flip_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    # mixed signs: |sum| = 0.1; patterns with |sum| >= 0.1 counted by hand over the 4 patterns of (0.3, -0.2)
    assert sign_flip_p([0.3, -0.2]) == pytest.approx(4 / 4)


def test_paired_difference_per_seed_and_interval():
    # seed 1: A beats B by 0.5 on every bio; seed 2: by 0.3; the interval must lie around the mean 0.4
    pairs = {1: ([1.0, 1.0, 0.5, None], [0.5, 0.5, 0.0, 0.2]),
             2: ([0.8, 0.8, 0.8, 0.8], [0.5, 0.5, 0.5, 0.5])}
    res = paired_difference(pairs, n_boot=500)
    # seed 1: A's mean over its 3 bios with claims = 2.5/3; B's over 4 = 1.2/4
    assert res["per_seed"][1] == pytest.approx(2.5 / 3 - 0.3)
    assert res["per_seed"][2] == pytest.approx(0.3)
    assert res["mean"] == pytest.approx((2.5 / 3 - 0.3 + 0.3) / 2)
    lo, hi = res["ci95"]
    assert 0.25 < lo <= res["mean"] <= hi < 0.6
    assert res["p_sign_flip"] == pytest.approx(2 / 4)


def test_no_difference_gives_an_interval_around_zero():
    a = [0.1 * (i % 10) for i in range(100)]
    res = paired_difference({s: (a, list(a)) for s in range(5)}, n_boot=200)
    assert res["mean"] == 0 and res["ci95"] == (0, 0)


def test_unpaired_lists_are_refused():
    with pytest.raises(ValueError, match="same prompts"):
        paired_difference({1: ([1.0], [1.0, 0.0])})
