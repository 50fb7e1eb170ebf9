"""``acestep-core ui``: a local Gradio page onto the same resolution as the CLI.

:mod:`.page` turns the page's controls into the CLI's own arguments and renders a resolution (no
Gradio); :mod:`.app` builds and serves the page (Gradio, the ``ui`` extra); :mod:`.command` registers
the command without importing either.
"""
