"""Code generators (``c``, ``tflm``, ``arduino``), each a plugin that registers a ``Backend`` (``base.py``).

What lives here: the backend interface, the backends' emitters, jinja2 templates and the shared C runtime, the
demo runners. May import: the IR and the core's data modules (``tinycc.config``, ``tinycc.backend_api``,
``tinycc.memory``, ``tinycc.tflite_writer``, ``tinycc.deploy``); never ``plugins/``, the driver or the CLI.
"""
