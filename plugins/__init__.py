"""Built-in plugins, registered through the same hooks (``tinycc/hookspecs.py``) as third-party ones.

What lives here: frontends (keras, tflite), passes (cleanup, quantize, prune), the deployment kinds (ondevice,
inference: thin registrations of the core's ``tinycc.deploy``), boards, and applications with CLI commands
(validate, simulate, search, serial). May import: the core (``tinycc.*`` modules, applications through
``tinycc.api``) and the IR; tensorflow only inside functions. The core never imports this package by name.
"""
