"""Forwards with several outputs: the structure is described once at the point, the engine sees
one flat array, the backward gets ``dout`` in the structure (None for integer outputs), and a
failing input's gradient is named through the outputs it is wrong through."""

from __future__ import annotations

from typing import NamedTuple

import array_api_compat
import numpy as np
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradcheck
from gradcheck.outputs import OutputsFault, describe_outputs, name_outputs
from gradcheck.result import CheckResult, InputSummary, Mismatch, Tolerance
from gradcheck_reference import gallery, multi


class State(NamedTuple):
    h: object
    c: object


A, B = np.arange(6.0).reshape(2, 3), np.arange(4.0)
IDX = np.array([1, 0, 2])

# value -> (names, shapes, differentiable, dout given to the backward for flat = 0, 1, 2, ...)
STRUCTURES = [
    ("tuple", (A, B), ["[0]", "[1]"], [(2, 3), (4,)], [True, True],
     (np.arange(6.0).reshape(2, 3), np.arange(6.0, 10.0))),
    ("list", [B, A], ["[0]", "[1]"], [(4,), (2, 3)], [True, True],
     [np.arange(4.0), np.arange(4.0, 10.0).reshape(2, 3)]),
    ("dict", {"loss": np.float64(2.0), "logits": A}, ["loss", "logits"], [(), (2, 3)], [True, True],
     {"loss": 0.0, "logits": np.arange(1.0, 7.0).reshape(2, 3)}),
    ("named tuple", State(h=B, c=B), ["h", "c"], [(4,), (4,)], [True, True],
     State(h=np.arange(4.0), c=np.arange(4.0, 8.0))),
    ("integer entry", (B, IDX), ["[0]", "[1]"], [(4,), (3,)], [True, False], (np.arange(4.0), None)),
    ("boolean entry", {"mask": B > 1, "y": B}, ["mask", "y"], [(4,), (4,)], [False, True],
     {"mask": None, "y": np.arange(4.0)}),
    ("nested", (A, {"state": State(h=B, c=np.float64(1.0)), "idx": IDX}),
     ["[0]", "[1].state.h", "[1].state.c", "[1].idx"], [(2, 3), (4,), (), (3,)], [True, True, True, False],
     (np.arange(6.0).reshape(2, 3), {"state": State(h=np.arange(6.0, 10.0), c=10.0), "idx": None})),
    ("one entry", (B,), ["[0]"], [(4,)], [True], (np.arange(4.0),)),
    ("python numbers", (1.5, 2), ["[0]", "[1]"], [(), ()], [True, False], (0.0, None)),
]


def _same(got, want):
    """Equal structure (container types) and values, None where None."""
    if isinstance(want, dict):
        return type(got) is type(want) and list(got) == list(want) and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, tuple | list):
        return (type(got) is type(want) and len(got) == len(want)
                and all(_same(g, w) for g, w in zip(got, want, strict=True)))
    if want is None:
        return got is None
    return np.shape(got) == np.shape(want) and np.array_equal(got, want)


@pytest.mark.parametrize(("what", "value", "names", "shapes", "differentiable", "dout"), STRUCTURES,
                         ids=[s[0] for s in STRUCTURES])
def test_the_structure_is_described_and_dout_comes_back_in_it(what, value, names, shapes, differentiable, dout):
    outputs = describe_outputs(value, value)
    assert [e.name for e in outputs.entries] == names
    assert [e.shape for e in outputs.entries] == shapes
    assert [e.differentiable for e in outputs.entries] == differentiable
    flat = outputs.flatten(value)
    size = sum(int(np.prod(s)) for s, d in zip(shapes, differentiable, strict=True) if d)
    assert flat.shape == (size,)
    assert _same(outputs.unflatten(np.arange(float(size))), dout)


# --- the flat/unflat round trip, for every structure ----------------------------------------

leaves = st.one_of(
    hnp.arrays(st.sampled_from([np.float64, np.float32]), hnp.array_shapes(min_dims=0, max_dims=2, min_side=0,
                                                                             max_side=3),
               elements=st.floats(-5, 5, width=32)),
    hnp.arrays(st.sampled_from([np.int64, np.bool_]), hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)),
)
keys = st.text("abcxyz", min_size=1, max_size=2)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(tuple),
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(keys, children, min_size=1, max_size=3),
        st.tuples(children, children).map(lambda t: State(*t)),
    ),
    max_leaves=6,
).filter(lambda v: isinstance(v, tuple | list | dict))


def _entries(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _entries(v)]
    if isinstance(value, tuple | list):
        return [x for v in value for x in _entries(v)]
    return [value]


def _skeleton(value):
    """The containers of a value (types and keys), its entries left out."""
    if isinstance(value, dict):
        return type(value), tuple(value), tuple(_skeleton(v) for v in value.values())
    if isinstance(value, tuple | list):
        return type(value), tuple(_skeleton(v) for v in value)
    return "entry"


@settings(max_examples=40, deadline=None)
@given(trees)
def test_flat_then_unflat_gives_each_floating_output_back_and_none_for_the_others(value):
    originals = _entries(value)
    if not any(e.dtype.kind == "f" for e in originals):
        with pytest.raises(OutputsFault, match="only integer or boolean outputs"):
            describe_outputs(value, value)
        return
    outputs = describe_outputs(value, value)
    flat = outputs.flatten(value)
    back = _entries(outputs.unflatten(flat))
    note(f"flat {flat!r}")
    assert flat.ndim == 1 and flat.size == sum(e.size for e in originals if e.dtype.kind == "f")
    assert len(back) == len(originals)
    for original, got in zip(originals, back, strict=True):
        if original.dtype.kind == "f":
            assert np.shape(got) == original.shape and np.array_equal(got, original)
        else:
            assert got is None
    assert _skeleton(outputs.unflatten(flat)) == _skeleton(value)


# --- end to end: numpy and torch forwards, both modes ----------------------------------------

LSTM_POINT = multi.lstm_point(np.random.default_rng(0))


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_an_lstm_step_returning_h_and_c_passes_and_its_bug_is_named_through_h(mode):
    result = gradcheck.check_gradients(multi.lstm_cell, multi.lstm_cell_backward, LSTM_POINT, mode=mode)
    assert result.verdict == "pass", str(result)
    assert result.oracles == ("numeric", "torch")
    assert [(o.name, o.shape) for o in result.outputs] == [("h", (3, 2)), ("c", (3, 2))]
    assert result.output_shape == (12,)

    bad = gradcheck.check_gradients(multi.lstm_cell, gallery.lstm_dh_not_through_c, LSTM_POINT, mode=mode,
                                    wrt=("Wx", "c0"))
    assert not bad.ok and {s.name for s in bad.inputs if not s.ok} == {"Wx", "c0"}
    assert all(s.outputs == ("h",) for s in bad.inputs)
    assert bad.mismatches and all(m.outputs == ("h",) for m in bad.mismatches)
    assert "wrt Wx, through output `h`" in str(bad) and "wrt c0, through output `h`" in str(bad)


def _lstm_dc_ignored(dout, x, h0, c0, Wx, Wh, b):
    """The upstream dc left out: the gradient through output c is wrong, through h right."""
    dh, dc = dout
    return multi.lstm_cell_backward(multi.LSTMState(dh, np.zeros_like(dc)), x, h0, c0, Wx, Wh, b)


def _lstm_both_wrong(dout, x, h0, c0, Wx, Wh, b):
    """dc ignored and dh's path into c dropped: wrong through both outputs."""
    dh, dc = dout
    return gallery.lstm_dh_not_through_c(multi.LSTMState(dh, np.zeros_like(dc)), x, h0, c0, Wx, Wh, b)


@pytest.mark.parametrize(("backward", "through", "text"), [
    (_lstm_dc_ignored, ("c",), "wrt c0, through output `c`"),
    (_lstm_both_wrong, ("h", "c"), "wrt c0, through outputs `h` and `c`"),
], ids=["c", "h and c"])
def test_the_outputs_a_gradient_is_wrong_through_are_named(backward, through, text):
    result = gradcheck.check_gradients(multi.lstm_cell, backward, LSTM_POINT, wrt="c0")
    assert not result.ok
    assert result.inputs[0].outputs == through
    assert all(m.outputs == through for m in result.mismatches)
    assert text in str(result)
    as_json = result.to_dict()
    assert as_json["inputs"][0]["outputs"] == list(through)
    assert as_json["outputs"][1] == {"name": "c", "shape": [3, 2], "dtype": "float64", "differentiable": True}
    with pytest.raises(gradcheck.GradientMismatch, match=text):
        gradcheck.assert_gradients(multi.lstm_cell, backward, LSTM_POINT, wrt="c0")


def test_a_same_shaped_pair_is_no_longer_blamed_on_the_backward():
    # (h, c) of one shape used to be stacked into one array; each now gets its own dout.
    result = gradcheck.check_gradients(lambda x: (x * 2.0, x * x),
                                       lambda dout, x: {"x": 2.0 * dout[0] + 2 * x * dout[1]},
                                       {"x": np.array([0.5, -1.5, 2.0])})
    assert result.verdict == "pass", str(result)


def test_a_single_output_goes_the_old_way():
    result = gradcheck.check_gradients(lambda x: x * 2.0, lambda dout, x: {"x": 2.0 * dout}, {"x": np.ones(3)})
    assert result.ok and result.outputs == () and result.output_shape == (3,)
    assert "outputs:" not in str(result)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_attention_returning_outputs_of_different_shapes(mode):
    rng = np.random.default_rng(1)
    inputs = {"q": rng.normal(size=(3, 2)), "k": rng.normal(size=(4, 2)), "v": rng.normal(size=(4, 3))}
    result = gradcheck.check_gradients(multi.attention, multi.attention_backward, inputs, mode=mode,
                                       oracles=("torch", "jax"))
    assert result.verdict == "pass", str(result)
    # jax is an extra: without it the oracle is left out with a note, and the rest holds.
    assert result.oracles == (("numeric", "torch", "jax") if jax_installed() else ("numeric", "torch"))
    assert [o.shape for o in result.outputs] == [(3, 3), (3,)]


def jax_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax") is not None


def test_max_pool_with_its_integer_indices():
    x = np.array([[0.3, -1.0, 2.0, 1.5], [-0.5, 0.25, 1.0, -2.0]])
    result = gradcheck.check_gradients(multi.max_pool, multi.max_pool_backward, {"x": x})
    assert result.verdict == "pass", str(result)
    assert result.oracles == ("numeric", "torch")
    assert [(o.name, o.differentiable) for o in result.outputs] == [("[0]", True), ("[1]", False)]
    assert "[1] (2, 2) int64 (not differentiable)" in str(result)


def test_a_dict_of_a_scalar_loss_and_logits_on_torch():
    def forward(x, W):
        logits = x @ W
        return {"loss": (logits**2).sum() / 2, "logits": logits}

    def backward(dout, x, W):
        dlogits = dout["logits"] + dout["loss"] * (x @ W)
        assert isinstance(dout["loss"], float)
        return {"x": dlogits @ W.T, "W": x.T @ dlogits}

    rng = np.random.default_rng(2)
    inputs = {"x": torch.tensor(rng.normal(size=(2, 3))), "W": torch.tensor(rng.normal(size=(3, 2)))}
    result = gradcheck.check_gradients(forward, lambda dout, x, W: backward(dout, x.numpy(), W.numpy())
                                       if isinstance(x, torch.Tensor) else backward(dout, x, W), inputs)
    assert result.verdict == "pass", str(result)
    assert [o.name for o in result.outputs] == ["loss", "logits"]


def test_backward_none_on_a_torch_module_returning_a_tuple():
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(3, 2).double()
    result = gradcheck.check_gradients(cell, None, {"input": torch.randn(4, 3, dtype=torch.float64)})
    assert result.verdict == "pass", str(result)
    assert [o.name for o in result.outputs] == ["[0]", "[1]"]
    assert {s.name for s in result.inputs} >= {"input", "weight_ih", "weight_hh"}


def test_backward_none_on_a_torch_function_returning_a_tuple_names_a_wrong_custom_gradient():
    class TanhPair(torch.autograd.Function):
        """(tanh x, x^2) with the second output's gradient wrong (x instead of 2x)."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.tanh(x), x * x

        @staticmethod
        def backward(ctx, da, db):
            (x,) = ctx.saved_tensors
            return da * (1 - torch.tanh(x) ** 2) + db * x

    result = gradcheck.check_gradients(lambda x: TanhPair.apply(x), None, {"x": torch.tensor([0.5, -1.0, 2.0])})
    assert not result.ok
    assert result.inputs[0].outputs == ("[1]",)


def test_a_backward_may_return_gradients_for_inputs_that_reach_only_an_integer_output():
    def forward(x, s):
        return x * 3.0, np.argmax(s)

    result = gradcheck.check_gradients(forward, lambda dout, x, s: {"x": 3.0 * dout[0], "s": np.zeros_like(s)},
                                       {"x": np.array([1.0, 2.0]), "s": np.array([0.1, 0.7, 0.2])})
    assert result.verdict == "pass", str(result)


def test_an_integer_output_that_moves_at_perturbed_points_is_not_a_fault():
    # argmax changes where x is perturbed across a tie; only the point's two evaluations must agree.
    x = np.array([1.0, 1.0 + 1e-9, 0.0])
    result = gradcheck.check_gradients(lambda x: (x * x, np.argmax(x)), lambda dout, x: {"x": 2 * x * dout[0]},
                                       {"x": x})
    assert result.ok and not result.faults, str(result)


def test_the_flat_form_keeps_torch_autograd_and_vmap_working():
    outputs = describe_outputs((torch.ones(2, 3), torch.tensor([1, 2])), (torch.ones(2, 3), torch.tensor([1, 2])))
    x = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    flat = outputs.flat_forward(lambda x: (x * 2.0, torch.argmax(x, dim=1)))(x=x)
    assert array_api_compat.is_torch_array(flat) and flat.shape == (6,)
    (grad,) = torch.autograd.grad(flat.sum(), [x])
    assert torch.equal(grad, torch.full((2, 3), 2.0, dtype=torch.float64))
    batched = torch.func.vmap(lambda v: outputs.flat_forward(lambda x: (x * 2.0, torch.argmax(x, dim=1)))(x=v))
    assert batched(torch.ones(5, 2, 3)).shape == (5, 6)


def test_the_report_names_the_output_of_a_gallery_bug(capsys):
    from gradcheck import cli

    code = cli.main(["report", "--gallery", "--case", "gallery.lstm_dh_not_through_c", "--examples", "1",
                     "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "wrt Wx, through output `h`" in out and "outputs: h (3, 2) float64, c (3, 2) float64" in out


def _summary(name, mismatches):
    return InputSummary(name=name, shape=(2,), dtype="float64", checked=2, mismatches=mismatches, kinks=0, worst={},
                        gradient_norm=1.0, tolerance=Tolerance(rtol=1e-6, atol=None, floor=1e-8))


def test_each_output_is_checked_alone_for_the_failing_inputs_only_and_only_when_there_are_several():
    calls = []

    def through(dout, wrt):
        calls.append((np.flatnonzero(dout).tolist(), wrt))
        wrong = bool(dout[:6].any())  # the gradient through the first output is wrong
        return CheckResult(ok=not wrong, inputs=(_summary("W", int(wrong)),), evaluations=10)

    mismatch = Mismatch(input="W", index=(0,), analytic=1.0, references={}, errors={}, relative_error=1.0,
                        tolerance=0.0, against=("numeric",))
    failed = CheckResult(ok=False, inputs=(_summary("W", 1), _summary("b", 0)), mismatches=(mismatch,),
                         evaluations=100)
    several = describe_outputs((A, B, IDX), (A, B, IDX))
    named = name_outputs(failed, several, np.arange(1.0, 11.0), through)
    assert calls == [(list(range(6)), ("W",)), (list(range(6, 10)), ("W",))]
    assert [s.outputs for s in named.inputs] == [("[0]",), ()]
    assert named.mismatches[0].outputs == ("[0]",)
    assert named.evaluations == 120

    calls.clear()
    one = describe_outputs((A, IDX), (A, IDX))  # one differentiable output: nothing to tell apart
    assert name_outputs(failed, one, np.ones(6), through) is failed
    passed = CheckResult(ok=True, inputs=(_summary("W", 0),))
    assert name_outputs(passed, several, np.ones(10), through) is passed
    assert calls == []


def test_complex_inputs_and_several_real_outputs_compose():
    def forward(z, w):
        return z.real * w, (z.imag**2).sum()

    def backward(dout, z, w, imag_factor=2.0):
        da, db = dout
        return {"z": da * w + 1j * (imag_factor * z.imag * db), "w": da * z.real}

    inputs = {"z": np.array([1 + 2j, -0.5 + 0.3j]), "w": np.array([0.5, 2.0])}
    assert gradcheck.check_gradients(forward, backward, inputs).verdict == "pass"
    wrong = gradcheck.check_gradients(forward, lambda dout, z, w: backward(dout, z, w, imag_factor=1.0), inputs)
    assert not wrong.ok and wrong.inputs[0].outputs == ("[1]",)
    assert {(m.index, m.part) for m in wrong.mismatches} == {((0,), "imag"), ((1,), "imag")}
