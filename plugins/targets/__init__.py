"""Built-in boards: the ``Board`` instances (RAM, flash, target spec) registered through the ``tinycc_register_boards`` hook.

May import the core's ``tinycc.targets`` and ``tinycc.session``; third-party boards register the same way.
"""
