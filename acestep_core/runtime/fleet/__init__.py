"""A GPU fleet on Ray (the ``fleet`` extra): :mod:`.scan` reads every card with one Ray task per GPU,
:mod:`.serve` serves one Ray Serve deployment per tier class behind a router that applies
:func:`acestep_core.routing.route`, and :mod:`.cli` adds ``acestep-core fleet scan|serve``.

This package's ``__init__`` imports nothing, so that the command line can register ``fleet`` without Ray.
"""
