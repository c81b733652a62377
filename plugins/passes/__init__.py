"""Graph passes: cleanup, L1-norm filter pruning, int8 calibration and quantization (plus its report).

Each module is a plugin registering passes into compile stages (``tinycc/stages.py``). May import the IR and the
core (``tinycc.passes``, config, errors, output); never a backend. ``keras_export`` builds the Keras model that
fine-tunes a pruned graph.
"""
