"""The JAX oracle: run the forward on float64 ``jax.numpy`` arrays and ask ``jax.vjp``.

A forward written against the array API (``array_api_compat.array_namespace``) runs on JAX
arrays as well, and ``jax.vjp`` gives the vector-Jacobian product the backward computes: an
exact reference, independent of torch's. float64 is switched on for the call only
(``jax.enable_x64``), so the caller's JAX configuration is left as it was. jax is imported only
when this oracle runs; without it the oracle is unavailable (``pip install gradcheck[jax]``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from gradcheck.estimates import Estimate, Unavailable
from gradcheck.evaluate import describe_exception

__all__ = ["JAX", "JaxOracle"]


def _x64(jax: Any) -> AbstractContextManager[Any]:
    """A context in which JAX computes in float64 (the name moved between JAX versions)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # type: ignore[attr-defined]  # older JAX; newer ones lack it

    return enable_x64()


class JaxOracle:
    """``jax.vjp`` on float64 arrays (see ``gradcheck.oracles``)."""

    name = "jax"
    arrays = "JAX arrays"

    def gradients(
        self, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], wrt: tuple[str, ...],
        dout: np.ndarray | float, *, dtypes: Mapping[str, str] | None = None,
    ) -> Estimate | Unavailable:
        """Gradients of ``sum(dout * forward(**inputs))`` by ``jax.vjp``, in float64 (or, given
        ``dtypes``, name -> dtype name, the floating inputs in those dtypes; the gradients are
        returned as float64 copies).

        Args:
            forward: the forward under test, called with JAX arrays as keywords.
            inputs: name -> numpy array (floating inputs already float64).
            wrt: names to differentiate.
            dout: upstream gradient (a number, or an array of the output's shape).
        Returns:
            the estimate, or why there is none; never raises for a forward that cannot run on
            JAX arrays.
        """
        try:
            import jax
            import jax.numpy as jnp
        except ImportError:
            return Unavailable(self.name, "jax is not installed (pip install gradcheck[jax])")
        dtypes = dtypes or {}

        def array(name: str) -> Any:
            a = inputs[name]
            return jnp.asarray(a, dtype=getattr(jnp, dtypes.get(name, "float64"))) if a.dtype.kind == "f" else \
                jnp.asarray(a)

        with _x64(jax):
            held = {n: array(n) for n in inputs if n not in wrt}

            def of_checked(*checked: Any) -> Any:
                return forward(**held, **dict(zip(wrt, checked, strict=True)))

            try:
                out, vjp = jax.vjp(of_checked, *(array(n) for n in wrt))
            except Exception as exc:  # the forward is numpy- or torch-only, or failed on JAX
                return Unavailable(self.name, _not_on_jax(exc), describe_exception(exc))
            if not isinstance(out, jax.Array):
                return Unavailable(self.name, f"forward returned {type(out).__name__} on JAX arrays, not an array")
            if not jnp.issubdtype(out.dtype, jnp.floating):
                return Unavailable(self.name, f"forward returns {out.dtype} on JAX arrays: nothing to differentiate")
            try:
                cotangent = jnp.broadcast_to(jnp.asarray(dout, dtype=out.dtype), out.shape)
                grads = vjp(cotangent)
            except Exception as exc:  # JAX could not differentiate the forward
                return Unavailable(self.name, f"jax.vjp could not differentiate the forward ({type(exc).__name__})",
                                   describe_exception(exc))
            gradients = {
                n: np.asarray(g.astype(jnp.float64)).reshape(inputs[n].shape) for n, g in zip(wrt, grads, strict=True)
            }
            return Estimate(self.name, gradients, np.asarray(out.astype(jnp.float64)))

    def jvp(
        self, forward: Callable[..., Any], inputs: Mapping[str, np.ndarray], tangents: Mapping[str, np.ndarray],
    ) -> Estimate | Unavailable:
        """The Jacobian-vector product of ``forward`` along ``tangents`` by ``jax.jvp`` in
        float64 (as ``TorchOracle.jvp``: under the key ``"jvp"``, with the output)."""
        try:
            import jax
            import jax.numpy as jnp
        except ImportError:
            return Unavailable(self.name, "jax is not installed (pip install gradcheck[jax])")
        names = tuple(tangents)
        with _x64(jax):
            held = {n: jnp.asarray(a) for n, a in inputs.items() if n not in tangents}

            def of_checked(*checked: Any) -> Any:
                return forward(**held, **dict(zip(names, checked, strict=True)))

            try:
                out, tangent = jax.jvp(of_checked, tuple(jnp.asarray(inputs[n], dtype=jnp.float64) for n in names),
                                       tuple(jnp.asarray(tangents[n], dtype=jnp.float64) for n in names))
            except Exception as exc:  # the forward is numpy- or torch-only, or failed on JAX
                return Unavailable(self.name, _not_on_jax(exc), describe_exception(exc))
            if not isinstance(out, jax.Array):
                return Unavailable(self.name, f"forward returned {type(out).__name__} on JAX arrays, not an array")
            return Estimate(self.name, {"jvp": np.asarray(tangent, dtype=np.float64)},
                            np.asarray(out, dtype=np.float64))


def _not_on_jax(exc: BaseException) -> str:
    """One line saying why a forward did not run on JAX arrays (the full error is kept apart)."""
    return (f"forward does not run on JAX arrays ({type(exc).__name__}); write it against the array "
            "API to add the jax oracle")


JAX = JaxOracle()
