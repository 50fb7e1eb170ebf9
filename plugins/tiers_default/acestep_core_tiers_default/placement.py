"""The built-in ``place_components``: which device runs each component.

The user's placement wins (``--place`` as a map or ``single:N``, else ``--device``, else upstream's
``ACESTEP_GPU_MAPPING`` or ``ACESTEP_{DIT,VAE,LM}_DEVICE``); a ``--place`` naming a device that is not
there is refused (a usage error on the command line), a variable that is not a placement is warned about
and ignored. Otherwise ``auto`` (:func:`acestep_core.plugin_api.auto_layout`): the default device alone
when it runs the request unclamped, else the layout over the visible devices that runs it unclamped on
the fewest devices with the least peak pressure, else the one that grants the most.
"""

from __future__ import annotations

from collections.abc import Mapping

from acestep_core.plugin_api import (
    Evaluate,
    MemoryReading,
    PlaceError,
    Placement,
    PlaceOptions,
    SettingIgnored,
    auto_layout,
    describe_layout,
    hookimpl,
    single,
    user_layout,
)


@hookimpl(trylast=True)
def place_components(readings: Mapping[str, MemoryReading], options: PlaceOptions, evaluate: Evaluate) -> Placement:
    try:
        wanted, given, notes = user_layout(options, readings)
    except PlaceError as error:
        raise SettingIgnored(f"--place {(options.place or '').strip()[:80]}: {error}", setting="--place") from None
    if wanted is not None:
        return Placement(wanted, f"placed by the user ({given}): {describe_layout(wanted, readings)}")
    if len(readings) == 1:
        [key] = readings
        return Placement(single(key), f"one device: every component on {readings[key].device.describe()}", notes=notes)
    layout, why = auto_layout(readings, options.default, evaluate)
    return Placement(layout, why, notes=notes)
