"""Frontends: read a model file into the graph IR (``keras`` for .h5/.keras, ``tflite`` for .tflite).

Each module is a plugin registering a ``Frontend`` through the ``tinycc_register_frontends`` hook. May import the IR and
the core's data modules (errors, names, tflite schema); never a backend or another plugin folder.
"""
