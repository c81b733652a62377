"""Assemble benchmarks/README.md from the runner's results (every number comes from a run)."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
ORDER = ["thesis", "prune", "quant", "scenarios", "scenarios-pruned", "scenarios-budget2", "scenarios-incremental-cnas",
         "scenarios-incremental-pruned", "backends", "kernels", "compile", "compile_kernels", "compile_startup",
         "compile_cpu", "mlperf", "search", "memory", "zoo", "random", "depth", "depth-drift", "depth-pool2", "depth-drift-pool2", "depth-recipes", "depth-offline",
         "depth-buffer10"]

HEADER = """# tinycc benchmarks

Each section below is `benchmarks/results/NAME.md` as written by `python -m benchmarks NAME --data DIR`
(machine and date in each section); JSON next to it. Regenerate this page with
`python -m benchmarks.make_readme`. Commands used for the current numbers:

```bash
python examples/train_cnas.py --data ../shared/data --epochs 3 --out cnas.keras        # the CNAS model
python examples/train_incremental_base.py --data ../shared/data --epochs 8 --out cifar8.keras
python -m benchmarks thesis --data ../shared/data --model cnas.keras
python -m benchmarks prune --data ../shared/data --model cnas.keras
python -m benchmarks quant --data ../shared/data --model cnas.keras --test 1000
python -m benchmarks scenarios --data ../shared/data --model cnas.keras --incremental-model cifar8.keras --runs 5
# ft5000.npz: the first 5,000 CIFAR-10 training images scaled to [0, 1] (x_train float32, y_train)
tinycc prune cnas.keras --layer-ratio conv_47=0.8546875 --finetune ft5000.npz --finetune-epochs 1 -o step1.keras
python -m benchmarks scenarios --data ../shared/data --model step1.keras --scenarios concept-drift,transfer \
    --lr-grid "" --lr 0.001 --runs 5 --tag pruned
tinycc prune cnas.keras --budget params=770621 --finetune ft5000.npz --finetune-epochs 1 -o budget2.keras
python -m benchmarks scenarios --data ../shared/data --model budget2.keras --scenarios concept-drift,transfer \
    --lr-grid "" --lr 0.001 --runs 5 --tag budget2
# the incremental scenario on the CNAS architecture trained on classes 0-7 only, unpruned and pruned
python examples/train_cnas.py --data ../shared/data --epochs 3 --classes 8 --out cnas8c.keras
# ft5000_c8.npz: the first 5,000 training images of classes 0-7, scaled to [0, 1] (x_train, y_train)
tinycc prune cnas8c.keras --layer-ratio conv_47=0.8546875 --finetune ft5000_c8.npz --finetune-epochs 1 \
    -o cnas8c_step1.keras
python -m benchmarks scenarios --data ../shared/data --model cnas8c.keras --incremental-model cnas8c.keras \
    --scenarios incremental --runs 5 --tag incremental-cnas
python -m benchmarks scenarios --data ../shared/data --model cnas8c_step1.keras \
    --incremental-model cnas8c_step1.keras --scenarios incremental --runs 5 --tag incremental-pruned \
    --lr-grid "" --lrs omega=0.001,tinyol=0.01,baseline=0.001   # the rates tuned on the unpruned model
python -m benchmarks backends
# TFLite Micro libraries are built into ~/.cache/tinycc from ../shared/vendor; an arm-none-eabi-g++ without C++
# headers (Debian without libstdc++-arm-none-eabi-*) uses those packages extracted into ~/.cache/tinycc/arm-libstdcxx/root:
#   apt-get download libstdc++-arm-none-eabi-dev libstdc++-arm-none-eabi-newlib; dpkg -x EACH.deb ~/.cache/tinycc/arm-libstdcxx/root
python -m benchmarks random --count 80 --seed 100   # random Keras models through every target and oracle
python -m benchmarks kernels   # MLPerf Tiny, CNAS (unpruned, step 1), the zoo; Cortex-M4, M7, M0+ and the host
# the current kernels section (issue #27; TFLM + CMSIS-NN at -Os and at its Makefile levels, per-layer profile):
python -m benchmarks kernels --models ResNet-8 "DS-CNN KWS" "MobileNetV1 VWW" --no-tflm-ref
python -m benchmarks compile --data ../shared/data   # also --target c with --kernels generic
python -m benchmarks compile --kernels-only --data ../shared/data   # compile_kernels: issue 27, CPU, <= 1.2x (--baseline PY: another checkout beside)
python -m benchmarks compile --startup-only   # compile_startup: the digits .h5 in fresh processes
# compile_cpu: a checkout of bef8cde^1 in /work/wt/before with its own venv as the baseline
python -m benchmarks compile_cpu --baseline /work/wt/before/.venv/bin/python --baseline-label "bef8cde^1 (...)"
python -m benchmarks mlperf --data ../shared/data   # models: ../shared/models/mlperf-tiny or $TINYCC_MODELS
nice -n 5 python -m benchmarks search --data ../shared/data --trials 10 --epochs 6 --subset 4000   # 32 min; defaults: 40 trials, 3 epochs, 10,000 images
# memory: the RAM freed by the fused SGD turned into replay buffer and accuracy; cnas6.keras: train_cnas.py
# --epochs 6 --limit 20000 (39.6% test accuracy), step1_6.keras: its step-1 pruning as above (fine-tuned 1 epoch)
python -m benchmarks memory --data ../shared/data --model resnet8=../shared/models/mlperf-tiny/pretrainedResnet.h5:1 \
    --model step1=step1_6.keras --budgets 48K,52K,56K,64K,80K,96K,128K,256K,830K --runs 5
python -m benchmarks zoo \\
    --extra "person_detect.tflite=tflite-micro tensorflow/lite/micro/models/person_detect.tflite (downloaded, not in this repository)" \\
    "dtln_noise_suppression.tflite=tflite-micro tensorflow/lite/micro/examples/dtln/dtln_noise_suppression.tflite (downloaded, not in this repository)"
    # benchmarks/zoo_models.py (random weights) + ../shared/models/mlperf-tiny + the published files in tests/data
    # (+ --extra FILE[=ORIGIN] files); c, tflm, arduino; M4 in QEMU; BUILTIN_REF and TFLite Micro checks
# depth: head-only vs --deep bias / blocks, transfer CIFAR-10 -> Imagenette-32, ResNet-8, 256 kB (defaults: ../shared)
python -m benchmarks depth --runs 3 --head-modes omega --deep bias --no-cut-only --no-diagnose --every 50
python -m benchmarks depth --scenario concept-drift --runs 3 --head-modes omega --deep bias --no-cut-only \\
    --no-diagnose --every 50
python -m benchmarks depth --head-grid 2 --runs 3 --head-modes omega --deep '' --sparse '' --no-diagnose \\
    --every 50 --tag pool2          # head-only with the 2x2-pooled head (256 features); --scenario concept-drift too
python -m benchmarks depth --stream 300 --test 100 --runs 1 --deep-buffer 10 --tag buffer10   # diagnostic, over budget
python -m benchmarks.depth_offline --runs 3 --stream 700   # TensorFlow upper bound per trainable subset
python -m benchmarks.depth_recipes --runs 3 --epochs 60 > r60.log   # recipes (augmentation, affine, AdaBN, 2x2 head)
python -m benchmarks.depth_recipes --summarize r60.log              # the table of depth-recipes.md
```
"""


def main() -> int:
    res = HERE / "results"
    parts = [HEADER]
    notes = HERE / "NOTES.md"
    if notes.exists():
        parts.append(notes.read_text())
    names = [n for n in ORDER if (res / f"{n}.md").exists()]
    names += sorted(p.stem for p in res.glob("*.md") if p.stem not in names)
    for n in names:
        text = (res / f"{n}.md").read_text().replace("](", "](results/")
        parts.append(text.replace("# ", "## ", 1))
    (HERE / "README.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'README.md'} from {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
