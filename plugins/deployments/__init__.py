"""Deployment kinds: thin plugins registering the core's deploy stage (``tinycc.deploy``).

``ondevice`` (int8 feature extractor + learning float head) and ``inference`` (--inference-only). May import
the core's ``tinycc.deploy`` and config; never a backend.
"""
