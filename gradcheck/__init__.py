"""gradcheck: check hand-written backward passes against numeric gradients and torch autograd.

Public API (everything else is internal):

* ``check_gradients(forward, backward, inputs, *, wrt, seed, rtol, atol, mode, progress, oracles, jvp, order,
  hvp) -> CheckResult`` (``order=2``: second derivatives too, see ``gradcheck.second_order``)
* ``assert_gradients(...)``: the same, raising ``GradientMismatch`` unless the check passes
* ``numeric_gradient(forward, inputs, dout=None, wrt=None) -> {name: array}``
* ``Case`` and ``register`` for cases the report and the pytest plugin run
* ``gradient_test``: a decorator turning a forward/backward pair (or a Case) into a
  Hypothesis-driven pytest test
* ``module_forward``: a ``torch.nn.Module`` as a forward of its inputs and parameters
* ``Progress``: what a ``progress`` callback receives during a long check
"""

from gradcheck.case import Case
from gradcheck.check import assert_gradients, check_gradients
from gradcheck.errors import GradcheckError, GradientMismatch
from gradcheck.numeric import numeric_gradient
from gradcheck.progress import Progress
from gradcheck.registry import register
from gradcheck.result import CheckResult
from gradcheck.testing import gradient_test
from gradcheck.torch_callables import module_forward

__all__ = [
    "Case",
    "CheckResult",
    "GradcheckError",
    "GradientMismatch",
    "Progress",
    "assert_gradients",
    "check_gradients",
    "gradient_test",
    "module_forward",
    "numeric_gradient",
    "register",
]

__version__ = "0.1.0"
