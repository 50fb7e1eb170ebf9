"""Running: the part of acestep-core that needs torch (the ``ml`` extra).

The deciding core (``acestep_core``) is pure Python and never imports this package; this package
imports the core and torch, at the top of its modules:

- :mod:`.models`: ACE-Step's components as real architectures from shipped configs (random weights);
- :mod:`.apply`: a plan applied to a model (precision, attention, quantization, offload, compile);
- :mod:`.vae_decode`: whole or tiled VAE decode, one batch item at a time (the one decode path);
- :mod:`.decoding`: the LM's duration constraint (a transformers logits processor);
- :mod:`.pipeline`: the reference pipeline, one module per phase;
- :mod:`.calibrate`: measure a device and write a tier table;
- :mod:`.cli`: the ``generate`` and ``calibrate`` commands;
- :mod:`.fleet`: a GPU fleet on Ray (the ``fleet`` extra): ``fleet scan`` and ``fleet serve``.
- :mod:`.ui`: the ``ui`` command's page (Gradio, the ``ui`` extra), onto the same resolution as the CLI.
"""

from acestep_core.runtime.backend_noise import silence_import_noise

silence_import_noise()
