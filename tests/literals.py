"""A project module full of number literals, written for tests of replay: Hypothesis mixes the
literals of imported local modules (neither installed nor test files) into what it draws."""

from pathlib import Path


def write_literals_module(directory: Path, name: str, *, low: float, high: float, count: int = 500) -> str:
    """Write module ``name`` into ``directory`` with ``count`` distinct float literals spread
    over ``[low, high]`` (and their negatives); return the module's name."""
    step = (high - low) / count
    values = ", ".join(f"{sign * (low + step * i)!r}" for i in range(count) for sign in (1, -1))
    (directory / f"{name}.py").write_text(f"VALUES = [{values}]\n")
    return name
