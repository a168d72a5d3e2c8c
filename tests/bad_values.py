"""Bad values of each validation rule and the one message each gets, wherever it enters.

``tests/test_bad_calls.py`` passes each value to every entry point that takes the argument (the
functions, the fixture, ``gradient_test``, ``Case``, ``CheckOptions``, ``Settings`` and the
command line); ``tests/test_pytest_plugin.py`` passes ``FLAG_VALUES`` to the plugin's options.
"""

import math

# (argument, bad value, the message of its rule in gradcheck.validation)
BAD_VALUES = [
    ("seed", -1, "seed must be a non-negative integer, got seed=-1"),
    ("seed", True, "seed must be a non-negative integer, got seed=True"),
    ("seed", 1.0, "seed must be a non-negative integer, got seed=1.0"),
    ("seed", "3", "seed must be a non-negative integer, got seed='3'"),
    ("examples", 0, "examples must be a positive integer, got examples=0"),
    ("examples", True, "examples must be a positive integer, got examples=True"),
    ("examples", 2.5, "examples must be a positive integer, got examples=2.5"),
    ("rtol", -1, "rtol must be None or a finite number >= 0, got rtol=-1"),
    ("rtol", math.nan, "rtol must be None or a finite number >= 0, got rtol=nan"),
    ("rtol", "1e-3", "rtol must be None or a finite number >= 0, got rtol='1e-3'"),
    ("atol", math.inf, "atol must be None or a finite number >= 0, got atol=inf"),
    ("atol", True, "atol must be None or a finite number >= 0, got atol=True"),
    ("mode", "fast", "mode must be one of ('auto', 'full', 'directional'), got mode='fast'"),
    ("mode", None, "mode must be one of ('auto', 'full', 'directional'), got mode=None"),
    ("progress", 3, "progress must be None, True, False or a callable, got progress=3"),
    ("deterministic", "yes", "deterministic must be True or False, got deterministic='yes'"),
    ("deterministic", 1, "deterministic must be True or False, got deterministic=1"),
    ("deterministic", None, "deterministic must be True or False, got deterministic=None"),
    ("forward", 3, "forward must be callable, got forward=3"),
    ("forward", None, "forward must be callable, got forward=None"),
    ("backward", "b", "backward must be callable or None, got backward='b'"),
    ("wrt", [], "wrt=() names no input to check"),
    ("wrt", ["x", "x"], "wrt repeats a name: wrt=('x', 'x')"),
    ("wrt", 3, "wrt must be a name or a sequence of names, got wrt=3"),
    ("wrt", ("x", 3), "wrt must be a name or a sequence of names, got wrt=('x', 3)"),
    ("wrt", {"x": 1}, "wrt must be a name or a sequence of names, got wrt={'x': 1}"),
    ("jvp", 3, "jvp must be None, True, False or a callable jvp(tangents, **inputs), got jvp=3"),
    ("jvp", "f", "jvp must be None, True, False or a callable jvp(tangents, **inputs), got jvp='f'"),
    ("order", 3, "order must be 1 or 2 (first derivatives, or second derivatives as well), got order=3"),
    ("order", 2.0, "order must be 1 or 2 (first derivatives, or second derivatives as well), got order=2.0"),
    ("order", True, "order must be 1 or 2 (first derivatives, or second derivatives as well), got order=True"),
    ("hvp", 3, "hvp must be callable or None, got hvp=3"),
    ("reference", 3, "reference must be callable or None, got reference=3"),
    ("reference_factor", 0, "reference_factor must be a finite number > 0, got reference_factor=0"),
    ("reference_factor", math.nan, "reference_factor must be a finite number > 0, got reference_factor=nan"),
    ("paths", ("eager", "jit"),
     "paths names 'jit', which is not an execution path (paths: ('eager', 'compile', 'aot_eager'))"),
    ("paths", 3, "paths must be a name or a sequence of names, got paths=3"),
    ("paths", ["eager", "eager"], "paths repeats a name: paths=('eager', 'eager')"),
    ("inputs", {"x": 1.0}, "inputs must be a Hypothesis strategy drawing a dict of inputs, or a dict of "
                           "strategies {name: strategy}; got inputs={'x': 1.0}, where 'x' is not a strategy "
                           "(st.just(value) holds a value fixed)"),
]

# (argument, its value as typed after --<argument> or --gradcheck-<argument>, the message)
FLAG_VALUES = [
    ("seed", "-1", "seed must be a non-negative integer, got seed=-1"),
    ("examples", "0", "examples must be a positive integer, got examples=0"),
    ("rtol", "nan", "rtol must be None or a finite number >= 0, got rtol=nan"),
    ("atol", "-1e-9", "atol must be None or a finite number >= 0, got atol=-1e-09"),
    ("atol", "inf", "atol must be None or a finite number >= 0, got atol=inf"),
    ("order", "3", "order must be 1 or 2 (first derivatives, or second derivatives as well), got order=3"),
]
