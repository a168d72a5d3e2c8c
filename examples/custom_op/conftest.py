"""Test configuration of the example project.

The ``gradcheck`` fixture and the ``--gradcheck-*`` options come from gradcheck's pytest plugin,
which pytest loads by its entry point once gradcheck is installed: nothing to declare here.
This file's directory is the project root, which pytest puts on ``sys.path`` for ``fused_xent``.
"""
