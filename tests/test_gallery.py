"""The gallery of known-buggy backward passes: every one is caught, and named as declared."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

import gradcheck
import gradcheck_reference

GALLERY = {case.name: case for case in gradcheck_reference.GALLERY}


def test_the_gallery_covers_the_mistakes_of_the_notes():
    assert len(GALLERY) >= 13
    for case in GALLERY.values():
        assert case.is_gallery and case.bug and case.points
        assert case.expected_diagnosis in {None, "scale", "sign", "conjugated", "transpose", "swapped", "zero",
                                           "mask", "additive"}


@pytest.mark.parametrize("name", sorted(GALLERY))
def test_bug_is_caught_and_named_at_its_representative_point(name):
    case = GALLERY[name]
    (point,) = case.points
    result = gradcheck.check_gradients(case.forward, case.backward, point, wrt=case.wrt, jvp=case.jvp,
                                       order=case.order, hvp=case.hvp)
    assert not result.ok
    wrong = [s for s in result.inputs if not s.ok]
    if case.expected_diagnosis is None:
        # No simple pattern, or a fault (e.g. non-finite gradients): never a wrong name.
        assert result.faults or all(s.diagnosis is None for s in wrong), str(result)
    else:
        assert wrong and all(s.diagnosis is not None and s.diagnosis.kind == case.expected_diagnosis
                             for s in wrong), str(result)
        assert f"likely bug ({case.expected_diagnosis})" in str(result)


@pytest.mark.parametrize("name", sorted(GALLERY))
def test_bug_is_caught_on_drawn_examples(name):
    case = GALLERY[name]
    caught = []

    @settings(max_examples=15, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case.inputs)
    def run(inputs):
        caught.append(not gradcheck.check_gradients(case.forward, case.backward, inputs, wrt=case.wrt,
                                                    jvp=case.jvp, order=case.order, hvp=case.hvp).ok)

    run()
    # Degenerate draws (a batch of one for a 1/m bug, say) may hide a bug; most must not.
    assert sum(caught) >= 0.5 * len(caught), f"{name}: caught {sum(caught)}/{len(caught)}"
