"""int8 accuracy: tinycc's own calibration + quantization against the TFLite converter's.

Both calibrate on the same samples; the test accuracy of the float model, tinycc's int8 model
(int8 interpreter, arg-max of the dequantized logits: the final softmax does not change it) and the
converter's full-integer model (TFLite's default interpreter; its reference kernels abort on the
grouped convolutions the converter keeps, see shared/reference/cnas-model.md) are printed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .common import Result, data_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="trained Keras model (.keras/.h5) taking inputs scaled to [0, 1]")
    p.add_argument("--calib", type=int, default=500, help="calibration images from the training split")
    p.add_argument("--test", type=int, default=2000, help="test images")


def run(args: argparse.Namespace) -> Result:
    import keras
    import tensorflow as tf

    from tinycc.ir.interpreter import run as run_float
    from tinycc.ir.interpreter_int8 import run_int8
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.report import markdown_table
    from tinycc.session import Session

    with np.load(data_file(args.data, "cifar10.npz"), allow_pickle=False) as z:
        xc = z["x_train"][:args.calib].astype(np.float32) / 255
        xt, yt = z["x_test"][:args.test].astype(np.float32) / 255, z["y_test"][:args.test].astype(np.int64)
    session = Session(autoload=False)
    g = session.registry.frontend_for(args.model).load(args.model)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    float_acc = float((run_float(g, xt)[g.outputs[0]].argmax(1) == yt).mean())
    while g.ops[-1].kind.value == "softmax":
        g.outputs = [g.ops[-1].inputs[0]]
        g.ops.pop()
        g.prune_unused()
    t0 = time.time()
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=xc))
    t_q = time.time() - t0
    ours = float((run_int8(g, xt)[g.outputs[0]].argmax(1) == yt).mean())

    model = keras.models.load_model(args.model, compile=False)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([xc[i:i + 1]] for i in range(len(xc)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    data = conv.convert()
    it = tf.lite.Interpreter(model_content=data)
    it.allocate_tensors()
    ind, outd = it.get_input_details()[0], it.get_output_details()[0]
    s, zp = ind["quantization"]
    preds = []
    for i in range(len(xt)):
        q = np.clip(np.round(xt[i:i + 1] / s) + zp, -128, 127).astype(np.int8)
        it.set_tensor(ind["index"], q)
        it.invoke()
        preds.append(int(it.get_tensor(outd["index"]).argmax()))
    conv_acc = float((np.array(preds) == yt).mean())
    res = Result("quant")
    res.add(f"Model `{Path(args.model).name}`, {args.calib} calibration images (min/max), {args.test} CIFAR-10 "
            f"test images. tinycc quantized the graph in {t_q:.1f} s.")
    res.add(markdown_table(["", "float", "tinycc int8", "TFLite converter int8"],
                           [["accuracy", f"{float_acc:.4f}", f"{ours:.4f}", f"{conv_acc:.4f}"],
                            ["loss vs float", "", f"{float_acc - ours:+.4f}", f"{float_acc - conv_acc:+.4f}"]]))
    verdict = "no more than" if float_acc - ours <= float_acc - conv_acc + 1e-9 else "MORE than"
    res.add(f"tinycc's int8 model loses {verdict} the converter's ({(float_acc - ours) * 100:.2f} vs "
            f"{(float_acc - conv_acc) * 100:.2f} points).")
    res.data = {"float": float_acc, "tinycc_int8": ours, "converter_int8": conv_acc, "calib": args.calib,
                "test": args.test, "model": Path(args.model).name}
    return res
