"""compare_input as a unit: analytic, numeric, torch and kink values in, findings out.

Each row is one input of two elements: element 0 is the one the row is about, element 1 a plain
gradient of 1 that sets the input's scale (so the absolute floor is 1e-12 and relative errors
of element 0 are measured as usual). The float64 defaults apply: rtol 1e-7.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from gradcheck.compare import compare_input, worst_of
from gradcheck.numeric import NumericEstimate
from gradcheck.result import Disagreement, Kink, Tolerance

F64 = Tolerance(rtol=1e-7, atol=None, floor=1e-12, rounding=0.0)
NAN = math.nan


def compare(name, shape, analytic, est, torch, tol, torch_error=0.0):
    """``compare_input`` with torch as the one exact oracle (None: no exact oracle)."""
    return compare_input(name, shape, analytic, est, {} if torch is None else {"torch": torch}, tol,
                         exact_error=torch_error)


def estimate(numeric, error, kink=False, low=NAN, high=NAN, left=NAN, right=NAN):
    """The numeric oracle's estimate for element 0, with element 1 exact at 1."""
    return NumericEstimate(
        gradient=np.array([numeric, 1.0]), error=np.array([error, 0.0]), kink=np.array([kink, False]),
        left=np.array([left, NAN]), right=np.array([right, NAN]), low=np.array([low, NAN]),
        high=np.array([high, NAN]),
    )


def kink(low, high):
    return dict(kink=True, low=low, high=high, left=low, right=high)


# (analytic, numeric, numeric error, kink, torch, torch rounding,
#  mismatch against, disagreement, worst numeric, worst torch, why)
ROWS = [
    (1.0, 1.0, 1e-10, {}, None, 0.0, None, False, 0.0, None,
     "equal: nothing found"),
    (1.0 + 1e-6, 1.0, 1e-10, {}, None, 0.0, ("numeric",), False, 1e-6, None,
     "a relative 1e-6 is more than rtol 1e-7 plus the error"),
    (1.0 + 5e-8, 1.0, 0.0, {}, None, 0.0, None, False, 5e-8, None,
     "within rtol"),
    (1.001, 1.0, 2e-3, {}, None, 0.0, None, False, 1e-3, None,
     "within the numeric oracle's own error"),
    (1.001, 1.0, 5e-4, {}, None, 0.0, ("numeric",), False, 1e-3, None,
     "beyond it"),
    (1.0 + 1e-6, 1.0 + 1e-6, 1e-10, {}, 1.0, 0.0, ("torch",), True, 0.0, 1e-6,
     "numeric agrees, torch does not: a mismatch against torch, and the oracles disagree"),
    (1.0 + 1e-6, 1.0, 1e-10, {}, 1.0, 0.0, ("numeric", "torch"), False, 1e-6, 1e-6,
     "both oracles against it"),
    (1.0, 1.5, 1e-10, {}, 1.0, 0.0, None, True, 0.0, 0.0,
     "torch confirms the backward, numeric disagrees with both: an oracle disagreement, left out of the worst"),
    (1.0, 1.0 + 1e-6, 1e-10, {}, 1.0 + 2e-6, 0.0, ("numeric", "torch"), True, 0.0, 2e-6,
     "three values apart: a mismatch held to torch, and a disagreement"),
    (3e-12, 0.0, 0.0, {}, 0.0, 0.0, ("numeric", "torch"), False, 3e-9, 3e-9,
     "a gradient that should be 0: above the floor 1e-12 (measured against a thousandth of the scale)"),
    (3e-12, 0.0, 5e-12, {}, 0.0, 5e-12, None, False, 0.0, 0.0,
     "within the oracles' rounding, and too small to count in the worst error"),
    (0.5, 0.5, 0.0, kink(0.0, 1.0), 0.7, 0.0, None, False, 0.0, 0.0,
     "at a kink between the slopes: no mismatch, and torch's value is not held against it"),
    (1.0, 0.5, 0.0, kink(0.0, 1.0), None, 0.0, None, False, 0.0, None,
     "at the end of the slopes' range"),
    (1.0 + 16.0, 0.5, 0.0, kink(0.0, 1.0), None, 0.0, None, False, 0.0, None,
     "beyond the end by KINK_MARGIN times the range's size: still allowed (coincident kinks)"),
    (1.0 + 16.0 + 1e-4, 0.5, 0.0, kink(0.0, 1.0), None, 0.0, ("numeric",), False, 0.0, None,
     "past the margin"),
    (20.0, 0.5, 0.0, kink(0.0, 1.0), 20.0, 0.0, ("numeric",), False, 0.0, 0.0,
     "far outside the slopes, though torch agrees (autograd's choice at the kink is no proof)"),
    (-1.0, 0.0, 0.0, kink(-1.0, 1.0), None, 0.0, None, False, 0.0, None,
     "|x| at 0 with sign(x) = -1: a slope of a piece meeting there"),
    (7.0, NAN, NAN, {}, None, 0.0, None, False, 0.0, None,
     "the forward failed around it: not compared"),
]


@pytest.mark.parametrize(
    "analytic, numeric, error, kinked, torch, rounding, against, disagrees, worst_numeric, worst_torch, why",
    ROWS, ids=[r[-1] for r in ROWS])
def test_compare_row(analytic, numeric, error, kinked, torch, rounding, against, disagrees, worst_numeric,
                     worst_torch, why):
    t = None if torch is None else np.array([torch, 1.0])
    c = compare("x", (2,), np.array([analytic, 1.0]), estimate(numeric, error, **kinked), t, F64,
                      torch_error=np.array([rounding, 0.0]))
    if against is None:
        assert not c.mismatches and not c.mismatch_mask.any(), why
    else:
        assert [m.index for m in c.mismatches] == [(0,)], why
        m = c.mismatches[0]
        assert m.against == against, why
        assert c.mismatch_mask.tolist() == [True, False]
        assert m.difference > m.tolerance, why
        if kinked:
            assert m.references.get("numeric") is None and m.slopes == (kinked["low"], kinked["high"])
    assert bool(c.disagreements) == disagrees, why
    assert [k.index for k in c.kinks] == ([(0,)] if kinked else []), why
    assert c.compared == (1 if kinked or not math.isfinite(numeric) else 2), why
    assert c.worst.get("numeric") == pytest.approx(worst_numeric, rel=1e-3, abs=1e-15), why
    if worst_torch is None:
        assert c.worst.get("torch") is None and torch is None, why
    else:
        assert c.worst.get("torch") == pytest.approx(worst_torch, rel=1e-3, abs=1e-15), why


def test_the_allowance_of_a_mismatch_is_rtol_floor_and_error():
    c = compare("x", (2,), np.array([2.0, 1.0]), estimate(1.0, 1e-9), None, F64)
    (m,) = c.mismatches
    assert m.tolerance == pytest.approx(1e-7 * 2.0 + 1e-12 * 2.0 + 1e-9, rel=1e-12)
    assert m.difference == 1.0 and m.relative_error == pytest.approx(0.5)
    assert m.references.get("numeric") == 1.0 and m.errors.get("numeric") == 1e-9 and m.references.get("torch") is None


def test_the_allowance_against_torch_is_its_rounding():
    c = compare("x", (2,), np.array([2.0, 1.0]), estimate(2.0, 1e-9), np.array([1.0, 1.0]), F64,
                      torch_error=np.array([3e-9, 0.0]))
    (m,) = c.mismatches
    assert m.tolerance == pytest.approx(1e-7 * 2.0 + 1e-12 * 2.0 + 3e-9, rel=1e-12)
    assert m.against == ("torch",) and m.references.get("torch") == 1.0


def test_mismatches_are_listed_worst_first_with_their_indices():
    a = np.array([1.0, 2.0, 3.0, 4.0]).reshape(2, 2)
    n = a * np.array([1.0, 1.1, 1.0, 1.5]).reshape(2, 2)
    flat = NumericEstimate.exact(n)
    c = compare("W", (2, 2), a.reshape(-1), flat, None, F64)
    assert [m.index for m in c.mismatches] == [(1, 1), (0, 1)]
    assert c.worst_at == {"numeric": (1, 1)}
    assert c.worst.get("numeric") == pytest.approx(2.0 / 6.0)


def test_worst_of_takes_the_largest_where_allowed_and_nan_first():
    rel = np.array([0.1, 0.5, 0.3, np.nan])
    assert worst_of(rel, np.array([True, False, True, False])) == (pytest.approx(0.3), 2)
    assert math.isnan(worst_of(rel, np.array([True, True, True, True]))[0])
    assert worst_of(rel, np.zeros(4, dtype=bool)) == (None, None)


# (analytic, numeric, torch, elements flagged, why): element 1 is within the floor 1e-12 of the
# input's largest gradient, which comes from whichever array holds it.
SCALES = [
    ([1.0, 0.0], [1.0, 5e-13], None, [], "the analytic gradient's largest"),
    ([0.0, 0.0], [1.0, 5e-13], None, [0], "the numeric oracle's largest"),
    ([0.0, 0.0], [NAN, NAN], [1.0, 5e-13], [0], "torch's largest, where numeric failed"),
    ([0.0, 0.0, 0.0], [1.0, 5e-13, NAN], None, [0], "a failed element does not spoil it"),
    ([1e-6, 0.0], [1e-6, 1e-15], None, [1], "a small gradient gets a small floor (1e-18)"),
    ([1e-6, 0.0], [1e-6, 1e-15], [1e-6, 1e-15], [1], "with torch too"),
]


@pytest.mark.parametrize("analytic, numeric, torch, flagged, why", SCALES, ids=[r[-1] for r in SCALES])
def test_the_floor_follows_the_largest_gradient_of_any_oracle(analytic, numeric, torch, flagged, why):
    est = NumericEstimate.exact(np.array(numeric))
    t = None if torch is None else np.array(torch)
    c = compare("x", (len(analytic),), np.array(analytic), est, t, F64)
    assert np.flatnonzero(c.mismatch_mask).tolist() == flagged, why


def test_a_kinks_central_difference_sets_no_scale():
    """At a kink the central difference (here 1e6) is no gradient: the floor stays 1e-12."""
    est = NumericEstimate(np.array([1.0, 5e-13, 1e6]), np.zeros(3), np.array([False, False, True]),
                          np.array([NAN, NAN, 0.0]), np.array([NAN, NAN, 2e6]), np.array([NAN, NAN, 0.0]),
                          np.array([NAN, NAN, 2e6]))
    c = compare("x", (3,), np.array([1.0, 3e-12, 1.0]), est, None, F64)
    assert np.flatnonzero(c.mismatch_mask).tolist() == [1]


def test_an_empty_input_compares_nothing():
    empty = np.zeros(0)
    c = compare("x", (0,), empty, NumericEstimate.exact(empty), empty, F64)
    assert (c.mismatches, c.kinks, c.compared, c.worst.get("numeric"), c.worst.get("torch")) == ((), (), 0, None, None)


def test_torch_is_held_exactly_unless_its_rounding_is_given():
    c = compare("x", (2,), np.array([1.5, 1.0]), estimate(1.5, 0.0), np.array([1.0, 1.0]), F64)
    assert [m.against for m in c.mismatches] == [("torch",)]


def test_a_difference_equal_to_its_allowance_passes():
    exact = Tolerance(rtol=0.0, atol=0.0, floor=0.0)
    c = compare("x", (2,), np.array([1.5, 1.0]), estimate(1.0, 0.5), None, exact)
    assert not c.mismatches
    c = compare("x", (2,), np.array([1.5, 1.0]), estimate(1.0, 0.25), None, exact)
    assert [m.index for m in c.mismatches] == [(0,)]


EXACT = Tolerance(rtol=0.0, atol=0.0, floor=0.0)


def test_a_mismatch_is_held_to_torch_where_torch_is_against_it():
    c = compare("x", (2,), np.array([1.0 + 1e-6, 1.0]), estimate(1.0, 1e-10), np.array([1.0, 1.0]), F64)
    (m,) = c.mismatches
    assert m.against == ("numeric", "torch")
    assert m.tolerance == pytest.approx(1e-7 * (1.0 + 1e-6) + 1e-12, rel=1e-12)  # torch's: no error added


def test_a_mismatch_against_numeric_alone_is_held_to_numeric():
    """Torch is within its rounding of the backward and of numeric, numeric is not within its
    error of the backward: held to numeric, with numeric's allowance."""
    c = compare("x", (2,), np.array([1.0, 1.0]), estimate(1.5, 0.25), np.array([1.25, 1.0]), EXACT,
                      torch_error=np.array([0.25, 0.0]))
    (m,) = c.mismatches
    assert m.against == ("numeric",) and not c.disagreements
    assert (m.difference, m.tolerance) == (0.5, 0.25)


@pytest.mark.parametrize("analytic, numeric, error, torch, rounding, why", [
    (1.5, 1.5, 0.5, 1.0, 0.5, "the backward against torch"),
    (1.0, 1.5, 0.5, 1.0, 0.0, "numeric against torch: no disagreement"),
])
def test_a_difference_equal_to_its_allowance_passes_against_torch(analytic, numeric, error, torch, rounding, why):
    c = compare("x", (2,), np.array([analytic, 1.0]), estimate(numeric, error), np.array([torch, 1.0]), EXACT,
                      torch_error=np.array([rounding, 0.0]))
    assert not c.mismatches and not c.disagreements, why


def test_the_worst_errors_leave_out_what_the_oracles_cannot_resolve():
    # numeric: |a|, |n| at most its error (1e-10); torch: at most its rounding (0.5).
    c = compare("x", (2,), np.array([1e-10, 1.0]), estimate(0.0, 1e-10), None, F64)
    assert c.worst.get("numeric") == 0.0
    c = compare("x", (2,), np.array([0.5, 1.0]), estimate(0.5, 0.0), np.array([0.25, 1.0]), EXACT,
                      torch_error=np.array([0.5, 0.0]))
    assert not c.mismatches and c.worst.get("torch") == 0.0


def test_the_slopes_range_applies_at_kinks_only():
    """A refined element that is no kink has its range measured too; it is held to numeric."""
    est = NumericEstimate(np.array([1.0, 1.0]), np.zeros(2), np.zeros(2, dtype=bool), np.full(2, 2.0),
                          np.full(2, 3.0), np.full(2, 2.0), np.full(2, 3.0))
    c = compare("x", (2,), np.array([1.0, 1.0]), est, None, F64)
    assert not c.mismatches and not c.kinks


def test_a_mismatch_mask_is_boolean_and_kinks_raise_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = compare("x", (2,), np.array([20.0, 1.0]), estimate(0.5, 0.0, **kink(0.0, 1.0)), None, F64)
    assert c.mismatch_mask.dtype == bool and c.mismatch_mask.tolist() == [True, False]
    assert c.mismatches[0].relative_error == pytest.approx(0.95)  # against the nearest slope, 1


def test_mismatches_are_ordered_by_relative_error_then_index():
    n = 40
    a = np.ones(n)
    numeric = np.where(np.arange(n) % 2 == 0, 0.5, 0.25)  # relative errors 0.5 and 0.75, alternating
    c = compare("x", (n,), a, NumericEstimate.exact(numeric), None, F64)
    order = [m.index[0] for m in c.mismatches]
    assert order == list(range(1, n, 2)) + list(range(0, n, 2))


def test_an_element_numeric_cannot_evaluate_reports_its_torch_error():
    c = compare("x", (2,), np.array([1.1, 2.0]), estimate(NAN, NAN), np.array([1.0, 1.0]), F64)
    assert [m.index for m in c.mismatches] == [(1,), (0,)]
    assert [m.relative_error for m in c.mismatches] == pytest.approx([0.5, 0.1 / 1.1])
    failed = c.mismatches[1]  # element 0, where the forward failed around the point
    assert failed.references.get("numeric") is None and failed.errors.get("numeric") is None


def test_findings_carry_their_values():
    c = compare("x", (2,), np.array([0.5, 1.0]), estimate(0.5, 0.0, **kink(0.0, 1.0)), np.array([0.7, 1.0]), F64)
    assert c.kinks == (Kink("x", (0,), 0.5, 0.0, 1.0, {"torch": 0.7}),)
    assert c.reference.tolist() == [0.7, 1.0] and c.usable.tolist() == [False, True]
    c = compare("x", (2,), np.array([1.0, 1.0]), estimate(1.5, 1e-10), np.array([1.0, 1.0]), F64)
    assert c.disagreements == (Disagreement("x", (0,), {"numeric": 1.5, "torch": 1.0}, {"numeric": 1e-10}),)
    assert c.worst_at == {"numeric": (1,), "torch": (0,)}
    c = compare("x", (2,), np.array([1.0, 1.0]), estimate(0.5, 0.0, **kink(0.0, 1.0)), None, F64)
    assert c.reference.tolist() == [0.5, 1.0] and c.usable.tolist() == [False, True]


def test_a_mismatch_at_a_kink_is_held_to_the_slopes_without_the_numeric_error():
    c = compare("x", (2,), np.array([-20.0, 1.0]), estimate(0.5, 0.25, **kink(0.0, 1.0)), None, F64)
    (m,) = c.mismatches
    assert (m.analytic, m.slopes) == (-20.0, (0.0, 1.0))
    assert "numeric" not in m.references and "numeric" not in m.errors
    # rtol and the floor (of the largest gradient, 20), and KINK_MARGIN times the range's size (1).
    assert (m.difference, m.tolerance) == (20.0, pytest.approx(1e-7 * 20.0 + 1e-12 * 20.0 + 16.0, rel=1e-12))


def test_a_mismatch_away_from_kinks_has_no_slopes():
    c = compare("x", (2,), np.array([2.0, 1.0]), estimate(1.0, 1e-9), None, F64)
    assert c.mismatches[0].slopes is None and c.mismatches[0].analytic == 2.0


def test_the_elements_usable_for_diagnosis_are_those_compared_with_the_reference():
    failed = estimate(NAN, NAN)  # the forward failed around element 0
    c = compare("x", (2,), np.array([1.0, 1.0]), failed, None, F64)
    assert c.usable.tolist() == [False, True]  # numeric is the reference: element 0 has none
    c = compare("x", (2,), np.array([1.0, 1.0]), failed, np.array([1.0, 1.0]), F64)
    assert c.usable.tolist() == [True, True]  # torch is: it has a value everywhere but at kinks


def test_exact_oracles_apart_from_each_other_are_disagreements_with_their_values():
    """Three exact oracles: a and b agree, c is 0.5 off at element 1 (and kinks are left out)."""
    a = np.array([1.0, 2.0, 3.0])
    exact = {"a": a.copy(), "b": a.copy(), "c": a + np.array([0.0, 0.5, 0.0])}
    est = NumericEstimate.missing(3)
    c = compare_input("x", (3,), a.copy(), est, exact, F64)
    assert c.disagreements == (
        Disagreement("x", (1,), {"a": 2.0, "c": 2.5}),
        Disagreement("x", (1,), {"b": 2.0, "c": 2.5}),
    )
    # The analytic gradient agrees with a and b: a mismatch against c alone, held to c.
    (m,) = c.mismatches
    assert (m.index, m.against, m.difference) == ((1,), ("c",), 0.5)
    assert m.references == {"a": 2.0, "b": 2.0, "c": 2.5}
    # Within the rounding allowed between exact oracles: no disagreement.
    close = compare_input("x", (3,), a.copy(), est, exact, F64, exact_error=np.array([0.0, 0.6, 0.0]))
    assert close.disagreements == () and close.mismatches == ()
    # At a kink exact oracles are not held to each other either.
    kinked = NumericEstimate(np.full(3, np.nan), np.full(3, np.nan), np.array([False, True, False]),
                             *(np.full(3, np.nan) for _ in range(4)))
    assert compare_input("x", (3,), a.copy(), kinked, exact, F64).disagreements == ()


def test_a_mismatch_is_held_to_the_first_exact_oracle_against_it():
    a = np.array([1.0, 1.0])
    exact = {"first": np.array([1.0, 1.5]), "second": np.array([1.0, 1.25]), "third": np.array([1.0, 1.0])}
    c = compare_input("x", (2,), a, NumericEstimate.missing(2), exact, F64)
    (m,) = c.mismatches
    assert m.against == ("first", "second") and m.difference == 0.5
    only_second = {"first": np.array([1.0, 1.0]), "second": np.array([1.0, 1.25])}
    (m,) = compare_input("x", (2,), a, NumericEstimate.missing(2), only_second, F64).mismatches
    assert m.against == ("second",) and m.difference == 0.25
