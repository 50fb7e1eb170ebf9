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

import logging


class _ExpectedImportNoise(logging.Filter):
    """Drops the warnings torchao 0.18 and diffusers 0.42 print on every import where nothing is wrong for us:
    torchao's CUDA-only extension libraries failing to load on a CPU build of torch, diffusers missing the
    torchao tensor classes 0.18 removed (used only to load checkpoints serialized by torchao, which we never
    read), and torch's notice that torchao registers enums for compile. Every other record passes."""

    EXPECTED = (
        "Failed to load ",
        "Unable to import `torchao` Tensor objects",
        "is an Enum subclass and is now natively supported by torch.compile",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(self.EXPECTED[0]) and "torchao" in message) and not any(
            text in message for text in self.EXPECTED[1:]
        )


for _name in ("torchao", "diffusers.quantizers.torchao.torchao_quantizer", "torch.utils._pytree"):
    logging.getLogger(_name).addFilter(_ExpectedImportNoise())
