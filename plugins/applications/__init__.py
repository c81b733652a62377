"""Applications with their own CLI commands: ``validate``, ``simulate`` (scenarios), ``search``, ``serial``.

They call the core's public API (``tinycc.api``) and never the driver or a backend module by name.
"""
