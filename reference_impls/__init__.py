"""The classic backprop examples, with hand-written backward passes, as gradcheck cases.

One module per family of the reference notes (gates, staged, matmul, twolayer, regression,
sigmoid_chain, softplus), ``complex`` (complex inputs and outputs), ``multi`` (forwards with
several outputs) and ``gallery``, known-buggy variants the harness must catch. Importing the
package registers every case with gradcheck; the ``gradcheck.cases`` entry point names it.

This folder is installed as ``gradcheck_reference`` (see ``pyproject.toml``): import it under
that name, and its modules import each other relatively.
"""

from gradcheck.registry import register

from . import complex as complex_cases
from . import gallery, gates, matmul, multi, regression, sigmoid_chain, softplus, staged, twolayer

CORRECT = (*gates.CASES, *staged.CASES, *matmul.CASES, *twolayer.CASES, *regression.CASES,
           *sigmoid_chain.CASES, *softplus.CASES, *complex_cases.CASES, *multi.CASES)
GALLERY = gallery.CASES

register(*CORRECT, *GALLERY)

__all__ = ["CORRECT", "GALLERY"]
