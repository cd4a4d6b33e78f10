"""What the fault tests of both network protocols share."""

from __future__ import annotations


def count_calls(microscope, method: str) -> list:
    """Note each call of `method` on this simulator instance: what the instrument really did."""
    calls, original = [], getattr(microscope, method)

    def counted(*args):
        calls.append(args)
        return original(*args)

    setattr(microscope, method, counted)
    return calls
