import pytest

from evals.metrics import calibration_bins, expected_calibration_error, pass_hat_k, percentile


def test_pass_hat_k_is_the_chance_that_k_drawn_trials_all_pass():
    # case A passes 2 of 4 trials, case B all 4
    cases = [[True, False, True, False], [True, True, True, True]]
    assert pass_hat_k(cases, 1) == pytest.approx((0.5 + 1.0) / 2)
    assert pass_hat_k(cases, 2) == pytest.approx((1 / 6 + 1.0) / 2)  # C(2,2)/C(4,2) = 1/6
    assert pass_hat_k(cases, 3) == pytest.approx((0.0 + 1.0) / 2)


def test_pass_hat_k_refuses_k_beyond_the_trials():
    with pytest.raises(ValueError):
        pass_hat_k([[True, True]], 3)


def test_ece_is_zero_when_confidence_matches_outcomes_and_large_when_overconfident():
    assert expected_calibration_error([1.0, 1.0, 0.0], [True, True, False]) == pytest.approx(0.0)
    assert expected_calibration_error([0.95] * 10, [False] * 10) == pytest.approx(0.95)
    bins = calibration_bins([0.05, 0.95, 0.95], [False, True, False])
    assert bins[0] == (pytest.approx(0.05), 0.0, 1)
    assert bins[-1] == (pytest.approx(0.95), 0.5, 2)


def test_percentile():
    assert percentile([1, 2, 3, 4, 100], 50) == 3
    assert percentile([], 95) == 0.0
