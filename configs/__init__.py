"""Packaged configuration data: ``default.yaml`` and the versioned prompts in ``prompts/``."""
