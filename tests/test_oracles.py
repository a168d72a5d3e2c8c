"""Exact oracles as plug-ins: the registry, the choice of oracles, results keyed by oracle name,
and the JAX oracle (skipped without jax)."""

from __future__ import annotations

import json

import array_api_compat
import numpy as np
import pytest

import gradcheck
from gradcheck.estimates import Estimate, Unavailable
from gradcheck.oracles import DEFAULT_ORACLES, ORACLES, choose_oracles, oracle_named


def layer(x, W):
    xp = array_api_compat.array_namespace(x, W)
    return xp.tanh(x @ W)


def layer_backward(dout, x, W):
    G = dout * (1 - np.tanh(x @ W) ** 2)
    return {"x": G @ W.T, "W": x.T @ G}


def scaled_W(dout, x, W):
    grads = layer_backward(dout, x, W)
    return {**grads, "W": grads["W"] * (1 + 1e-4)}


RNG = np.random.default_rng(1)
INPUTS = {"x": RNG.normal(size=(3, 4)), "W": RNG.normal(size=(4, 2))}


def test_the_registry_names_each_oracle_once():
    names = [o.name for o in ORACLES]
    assert names == ["torch", "jax"] and DEFAULT_ORACLES == ("torch",)
    assert all(oracle_named(n).name == n for n in names)
    assert [o.name for o in choose_oracles(None)] == list(DEFAULT_ORACLES)
    assert [o.name for o in choose_oracles(("jax", "torch"))] == ["jax", "torch"]


@pytest.mark.parametrize("given, message", [
    ("theano", r"oracles names 'theano', which is not an oracle \(oracles: \['torch', 'jax'\]\)"),
    (["torch", "torch"], r"oracles repeats a name"),
    (3, r"oracles must be a name or a sequence of names, got oracles=3"),
])
def test_bad_oracle_choices_are_misuse(given, message):
    with pytest.raises(gradcheck.GradcheckError, match=message):
        gradcheck.check_gradients(layer, layer_backward, INPUTS, oracles=given)


def test_no_exact_oracle_leaves_the_numeric_one():
    result = gradcheck.check_gradients(layer, layer_backward, INPUTS, oracles=())
    assert result.oracles == ("numeric",) and result.verdict == "pass"
    assert set(result.inputs[0].worst) == {"numeric"}


def test_results_are_keyed_by_oracle_name():
    result = gradcheck.check_gradients(layer, scaled_W, INPUTS)
    assert result.verdict == "fail" and result.oracles == ("numeric", "torch")
    (w,) = [s for s in result.inputs if s.name == "W"]
    assert set(w.worst) == {"numeric", "torch"} and w.worst["torch"] == pytest.approx(1e-4, rel=1e-3)
    m = result.mismatches[0]
    assert set(m.references) == {"numeric", "torch"} and set(m.errors) == {"numeric"}
    assert m.against == ("numeric", "torch")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["mismatches"][0]["references"]["torch"] == pytest.approx(m.references["torch"])
    assert not any(k in data["inputs"][0] for k in ("worst_numeric", "worst_torch"))


class _Shifted:
    """An oracle that returns torch's gradient shifted by a constant: it disagrees with torch."""

    name = "shifted"
    arrays = "torch tensors"

    def gradients(self, forward, inputs, wrt, dout):
        found = oracle_named("torch").gradients(forward, inputs, wrt, dout)
        if isinstance(found, Unavailable):
            return found
        return Estimate(self.name, {n: g + 0.5 for n, g in found.gradients.items()}, found.output)


def test_an_oracle_is_one_object_and_its_registration(monkeypatch):
    import gradcheck.oracles as registry

    monkeypatch.setattr(registry, "ORACLES", (*registry.ORACLES, _Shifted()))
    result = gradcheck.check_gradients(layer, layer_backward, INPUTS, oracles=("torch", "shifted"))
    assert result.oracles == ("numeric", "torch", "shifted")
    assert result.verdict == "fail"  # the backward disagrees with the shifted oracle ...
    assert all(m.against == ("shifted",) for m in result.mismatches)
    exact_apart = [d for d in result.disagreements if set(d.values) == {"torch", "shifted"}]
    assert exact_apart  # ... and the two exact oracles disagree with each other, said as such
    line = next(x for x in str(result).splitlines() if x.startswith("  oracles disagree"))
    assert " vs shifted " in line and "two exact oracles differentiate the forward differently" in line


def test_numpy_only_forward_shares_one_note_for_every_exact_oracle():
    pytest.importorskip("jax")
    result = gradcheck.check_gradients(lambda x: np.sin(x).sum(), lambda dout, x: {"x": dout * np.cos(x)},
                                       {"x": np.ones(3)}, oracles=("torch", "jax"))
    notes = [n for n in result.notes if "not used" in n]
    assert len(notes) == 2 or notes[0].startswith("torch and jax oracles not used")
    assert set(result.oracle_errors) <= {"torch", "jax"}


# -- the JAX oracle --------------------------------------------------------------------------

def test_jax_oracle_matches_torch():
    pytest.importorskip("jax")
    dout = RNG.normal(size=(3, 2))
    torch_found = oracle_named("torch").gradients(layer, INPUTS, ("x", "W"), dout)
    jax_found = oracle_named("jax").gradients(layer, INPUTS, ("x", "W"), dout)
    assert isinstance(jax_found, Estimate) and isinstance(torch_found, Estimate)
    for name in ("x", "W"):
        assert jax_found.gradients[name].dtype == np.float64
        np.testing.assert_allclose(jax_found.gradients[name], torch_found.gradients[name], rtol=1e-12)
    np.testing.assert_allclose(jax_found.output, layer(**INPUTS), rtol=1e-12)


def test_jax_oracle_leaves_the_callers_precision_alone():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    before = jax.config.jax_enable_x64
    oracle_named("jax").gradients(layer, INPUTS, ("W",), 1.0)
    assert jax.config.jax_enable_x64 == before
    assert jnp.asarray(np.ones(1)).dtype == (jnp.float64 if before else jnp.float32)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_check_with_jax_catches_and_names_it(mode):
    pytest.importorskip("jax")
    good = gradcheck.check_gradients(layer, layer_backward, INPUTS, oracles=("torch", "jax"), mode=mode)
    assert good.verdict == "pass" and good.oracles == ("numeric", "torch", "jax"), str(good)
    bad = gradcheck.check_gradients(layer, scaled_W, INPUTS, oracles=("jax",), mode=mode)
    assert bad.verdict == "fail" and bad.oracles == ("numeric", "jax")
    assert any("jax" in m.against for m in bad.mismatches), str(bad)
    assert "jax" in str(bad)


def test_jax_on_a_forward_with_integer_labels():
    pytest.importorskip("jax")

    def loss(X, y, W):
        xp = array_api_compat.array_namespace(X, W)
        z = X @ W
        picked = xp.take_along_axis(z, xp.reshape(y, (-1, 1)), axis=1)
        return xp.mean(picked)

    def backward(dout, X, y, W):
        G = np.zeros((X.shape[0], W.shape[1]))
        G[np.arange(X.shape[0]), y] = dout / X.shape[0]
        return {"W": X.T @ G}

    result = gradcheck.check_gradients(loss, backward, {"X": RNG.normal(size=(4, 3)), "y": np.array([0, 1, 1, 0]),
                                                        "W": RNG.normal(size=(3, 2))}, wrt="W", oracles=("jax",))
    assert result.oracles == ("numeric", "jax"), str(result)
    assert result.verdict == "pass"


def test_jax_not_installed_is_a_note_not_a_failure(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_jax(name, *args, **kwargs):
        if name == "jax" or name.startswith("jax."):
            raise ImportError("no jax here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    found = oracle_named("jax").gradients(layer, INPUTS, ("W",), 1.0)
    assert isinstance(found, Unavailable) and "pip install gradcheck[jax]" in found.reason
    result = gradcheck.check_gradients(layer, layer_backward, INPUTS, oracles=("torch", "jax"))
    assert result.verdict == "pass" and result.oracles == ("numeric", "torch")
    assert any(n.startswith("jax oracle not used: jax is not installed") for n in result.notes)


def test_directional_mode_lists_an_element_once_with_two_exact_oracles():
    pytest.importorskip("jax")

    def wrong_at_3(dout, x):
        g = 2 * x * dout
        g[3] += 1.0
        return {"x": g}

    def square(x):
        xp = array_api_compat.array_namespace(x)
        return xp.sum(x * x)

    x = np.linspace(-1.0, 1.0, 8)
    for mode in ("full", "directional"):
        result = gradcheck.check_gradients(square, wrong_at_3, {"x": x}, oracles=("torch", "jax"), mode=mode)
        assert [m.index for m in result.mismatches] == [(3,)], (mode, str(result))
        assert result.inputs[0].mismatches == 1


def test_with_backward_none_the_other_chosen_oracles_check_autograd():
    pytest.importorskip("jax")

    def forward(x):
        xp = array_api_compat.array_namespace(x)
        return xp.sum(xp.sin(x))

    result = gradcheck.check_gradients(forward, None, {"x": np.linspace(0.1, 1.0, 4)}, oracles=("torch", "jax"))
    assert result.oracles == ("numeric", "jax") and result.verdict == "pass", str(result)
