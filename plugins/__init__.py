"""Built-in plugins, registered through the same hooks (``tinycc/hookspecs.py``) as third-party ones.

One folder per role: ``frontends/`` (keras, tflite), ``passes/`` (cleanup, quantize, prune),
``deployments/`` (ondevice, inference: thin registrations of the core's ``tinycc.deploy``), ``targets/``
(boards) and ``applications/`` with CLI commands (validate, simulate, search, serial). May import: the core (``tinycc.*`` modules, applications through
``tinycc.api``) and the IR; tensorflow only inside functions. The core never imports this package by name.
"""
