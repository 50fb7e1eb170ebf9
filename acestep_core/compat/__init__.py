"""Compatibility layers: existing callers' APIs answered by acestep-core's plugins.

``acestep_core.compat.gpu_config`` is upstream ACE-Step's ``acestep/gpu_config.py`` API.
"""
