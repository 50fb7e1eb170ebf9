"""A GPU fleet on Ray (the ``fleet`` extra): :mod:`.scan` reads every card with one Ray task per GPU;
:mod:`.app` is the fleet as a standard Serve application (``acestep_core.runtime.fleet.app:app``, typed
arguments, ``serve run`` / ``serve deploy``); :mod:`.serve` holds its deployments (replicas per tier class,
routers applying :func:`acestep_core.routing.route_soonest`, the ledger, the two stages); :mod:`.limits`
bounds every request; :mod:`.generation` runs the pipeline in a replica; :mod:`.cli` adds
``acestep-core fleet scan|serve``.

This package's ``__init__`` imports nothing, so that the command line can register ``fleet`` without Ray.
"""
