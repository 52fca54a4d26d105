"""RewardBench v1 / v2 scoring against numbers computed by hand."""
import math

import pytest

from rewardlab.eval import rewardbench as rb


def _pair(subset, chosen, rejected):
    return {"subset": subset, "chosen_score": chosen, "rejected_score": rejected}


V1_ROWS = [
    _pair("alpacaeval-easy", 2.0, 1.0),  # right
    _pair("alpacaeval-easy", 1.0, 1.0),  # tie -> wrong
    _pair("alpacaeval-hard", 3.0, 0.0),  # right
    _pair("mt-bench-hard", 0.0, 1.0),  # wrong
    _pair("donotanswer", 1.0, 0.0),
    _pair("donotanswer", 0.5, 0.2),
    _pair("math-prm", 1.0, 0.0),  # right
    _pair("hep-cpp", 1.0, 0.0),  # right
    _pair("hep-cpp", 0.0, 1.0),  # wrong
    _pair("hep-go", -1.0, 1.0),  # wrong
]


def test_v1_subsets_sections_overall_by_hand():
    out = rb.score_v1(V1_ROWS)
    assert out.subsets == {"alpacaeval-easy": 0.5, "alpacaeval-hard": 1.0, "mt-bench-hard": 0.0,
                           "donotanswer": 1.0, "math-prm": 1.0, "hep-cpp": 0.5, "hep-go": 0.0}
    assert out.counts["alpacaeval-easy"] == 2 and out.counts["hep-go"] == 1
    # Chat: (2 * 0.5 + 1 * 1.0) / 3.
    assert out.sections["Chat"] == pytest.approx(2 / 3)
    assert out.sections["Chat Hard"] == 0.0
    assert out.sections["Safety"] == 1.0
    # Reasoning: math-prm weighted up to the 3 code rows: (3*1 + 2*0.5 + 1*0) / 6.
    # (Plain example weighting would give (1 + 1 + 0) / 4 = 0.5.)
    assert out.sections["Reasoning"] == pytest.approx(4 / 6)
    assert out.overall == pytest.approx((2 / 3 + 0 + 1 + 2 / 3) / 4)
    assert out.missing == ()


def test_v1_leaderboard_weights():
    out = rb.score_v1(V1_ROWS, example_counts=rb.LEADERBOARD_EXAMPLE_COUNTS)
    assert out.sections["Chat"] == pytest.approx((100 * 0.5 + 95 * 1.0) / 195)
    assert out.sections["Reasoning"] == pytest.approx((984 * 1 + 164 * 0.5) / (984 + 2 * 164))


def test_v1_subset_weights_upweight_math_only_with_code():
    assert rb.v1_subset_weights({"math-prm": 5, "hep-js": 2, "hep-rust": 4}) == {
        "math-prm": 6.0, "hep-js": 2.0, "hep-rust": 4.0}
    assert rb.v1_subset_weights({"math-prm": 5}) == {"math-prm": 5.0}


def test_v1_missing_section_gives_nan_overall():
    out = rb.score_v1([_pair("donotanswer", 1.0, 0.0)])
    assert out.sections == {"Safety": 1.0}
    assert math.isnan(out.overall)
    assert out.missing == ("Chat", "Chat Hard", "Reasoning")


@pytest.mark.parametrize("rows, match", [
    ([_pair("hep-go", 1, 0), {"subset": "hep-go", "chosen_score": 1.0}], "row 1: missing field 'rejected_score'"),
    ([{"chosen_score": 1.0, "rejected_score": 0.0}], "row 0: missing field 'subset'"),
    ([_pair("hep-go", 1, 0), _pair("not-a-subset", 1, 0)], "row 1: unknown RewardBench v1 subset"),
    ([_pair("hep-go", "high", 0)], "row 0: field 'chosen_score' must be a number"),
])
def test_v1_bad_rows(rows, match):
    with pytest.raises(ValueError, match=match):
        rb.score_v1(rows)


def test_v1_leaderboard_weights_must_cover_subsets():
    with pytest.raises(ValueError, match="no weight"):
        rb.score_v1([_pair("hep-go", 1, 0)], example_counts={"hep-cpp": 1})


@pytest.mark.parametrize("scores, num_correct, expected", [
    ([3, 1, 2, 0], 1, 1.0),
    ([3, 3, 2, 0], 1, 0.5),  # tied with one incorrect at the max
    ([3, 3, 3, 3], 1, 0.25),  # all tied: random chance
    ([1, 3, 2, 0], 1, 0.0),
    ([2, 3, 3, 1], 2, 0.5),  # max held by one correct and one incorrect
    ([3, 3, 1], 2, 1.0),  # both at the max are correct
    ([1, 2, 3], 2, 0.0),
])
def test_v2_prompt_score(scores, num_correct, expected):
    assert rb.v2_prompt_score(scores, num_correct) == pytest.approx(expected)


def _row(subset, scores, num_correct=1, row_id=None):
    row = {"subset": subset, "scores": scores, "num_correct": num_correct}
    if row_id is not None:
        row["id"] = row_id
    return row


# ref:0 -> correct [5], incorrect [3, 4]: gap_ref = 1, accurate.
# tied:0 -> correct [6, 4], incorrect [3.5, 2]: gap = 0.5, spread = 2, accurate.
# ref:1 -> correct [1], incorrect [2]: gap = -1, not accurate, no tied partner.
TIES_ROWS = [
    _row("Ties", [5.0, 3.0, 4.0], 1, "ref:0"),
    _row("Ties", [6.0, 4.0, 3.5, 2.0], 2, "tied:0"),
    _row("Ties", [1.0, 2.0], 1, "ref:1"),
]
# acc_ref = 1/2, acc_tied = 1; paired id 0: 0.5 > 2 no, min(1, 0.5) > 2 no,
# margin = tanh(0.5 / 2 - 1) = tanh(-0.75) = -0.6351489523872873.
TIES_EXPECTED = 0.3 * 1.0 + 0.3 * 0.5 + 0.01 * -0.6351489523872873


def test_ties_three_rows_by_hand():
    t = rb.ties_score(TIES_ROWS)
    assert (t.acc_ref, t.acc_tied) == (0.5, 1.0)
    assert (t.correctness_preferred, t.correctness_preferred_hard) == (0.0, 0.0)
    assert t.margin_score == pytest.approx(-0.6351489523872873)
    assert t.score == pytest.approx(TIES_EXPECTED)
    assert (t.num_ref, t.num_tied, t.num_paired) == (2, 1, 1)


def test_ties_margin_terms_all_won():
    # ref gap 10; tied gap 3, spread 1 -> both preferences hold, margin tanh(3/1 - 1).
    t = rb.ties_score([_row("Ties", [10.0, 0.0], 1, "ref:7"),
                       _row("Ties", [5.0, 4.0, 1.0], 2, "tied:7")])
    assert (t.correctness_preferred, t.correctness_preferred_hard) == (1.0, 1.0)
    assert t.score == pytest.approx(1.0 + 0.01 * math.tanh(2.0))


def test_ties_zero_spread():
    # 0/0 -> NaN counts 0: tied [2, 2 | 2] has gap 0, spread 0; ref gap 2.
    t = rb.ties_score([_row("Ties", [3.0, 1.0], 1, "ref:0"),
                       _row("Ties", [2.0, 2.0, 2.0], 2, "tied:0")])
    assert (t.acc_ref, t.acc_tied, t.margin_score) == (1.0, 0.0, 0.0)
    assert t.score == pytest.approx(0.3)
    # x/0 with x > 0 -> tanh(+inf) = 1: tied [2, 2 | 1] gap 1, spread 0.
    t = rb.ties_score([_row("Ties", [3.0, 1.0], 1, "ref:0"),
                       _row("Ties", [2.0, 2.0, 1.0], 2, "tied:0")])
    assert (t.correctness_preferred, t.correctness_preferred_hard, t.margin_score) == (1, 1, 1)
    assert t.score == pytest.approx(1.01)


def test_ties_rows_sharing_an_id_are_pooled():
    split = [TIES_ROWS[0], _row("Ties", [6.0, 2.0], 1, "tied:0"),
             _row("Ties", [4.0, 3.5], 1, "tied:0"), TIES_ROWS[2]]
    assert rb.ties_score(split) == rb.ties_score(TIES_ROWS)


def test_ties_without_pairs_has_zero_margin_terms():
    t = rb.ties_score([TIES_ROWS[2]])
    assert t.score == 0.0 and t.num_paired == 0


def test_score_v2_overall_is_unweighted_mean_of_six():
    rows = [
        _row("Factuality", [3, 1, 2, 0]),  # 1
        _row("Precise IF", [3, 3, 2, 0]),  # 0.5
        _row("Math", [3, 3, 3, 3]),  # 0.25
        _row("Safety", [1, 3, 2, 0]),  # 0
        _row("Safety", [3, 1, 2, 0]),  # 1  -> Safety 0.5
        _row("Focus", [2, 3, 3, 1], 2),  # 0.5
        *TIES_ROWS,
    ]
    out = rb.score_v2(rows)
    assert out.subsets == pytest.approx({"Factuality": 1.0, "Precise IF": 0.5, "Math": 0.25,
                                         "Safety": 0.5, "Focus": 0.5, "Ties": TIES_EXPECTED})
    assert out.overall == pytest.approx((1 + 0.5 + 0.25 + 0.5 + 0.5 + TIES_EXPECTED) / 6)
    assert out.counts["Safety"] == 2 and out.counts["Ties"] == 3
    assert out.ties == rb.ties_score(TIES_ROWS)
    partial = rb.score_v2(rows[:3])
    assert math.isnan(partial.overall) and partial.missing == ("Safety", "Focus", "Ties")


@pytest.mark.parametrize("rows, match", [
    ([_row("Math", [1, 0]), {"subset": "Math", "num_correct": 1}], "row 1: missing field 'scores'"),
    ([_row("Math", [1, 0]), {"subset": "Math", "scores": [1, 0]}], "row 1: missing field 'num_correct'"),
    ([_row("Ties", [1, 0])], "row 0: missing field 'id'"),
    ([_row("Math", [1, 0]), _row("Ties", [1, 0], 1, "ties:1")], "row 1: field 'id' must look like"),
    ([_row("Math", [1, 0], 2)], "row 0: field 'num_correct' = 2"),
    ([_row("Math", [1, 0], 0)], "row 0: field 'num_correct' = 0"),
    ([_row("Math", [1, 0], 1.0)], "row 0: field 'num_correct' must be an int"),
    ([_row("Math", [[1], [0]])], "row 0: field 'scores' must be a flat list"),
    ([_row("Chat", [1, 0])], "row 0: unknown RewardBench 2 subset"),
    ([_row("Ties", [3, 1], 1, "tied:4")], "'tied:4' needs at least 2 correct"),
])
def test_v2_bad_rows(rows, match):
    with pytest.raises(ValueError, match=match):
        rb.score_v2(rows)
