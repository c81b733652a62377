"""Host simulator of a deployment: the reference the generated device code is compared against."""
from __future__ import annotations

import numpy as np

from .buffer import OnlineLearner, ReplayBuffer
from .deployment import Deployment
from .interpreter_int8 import run_int8
from .train import Classifier, DenseLayer


class Simulator:
    """int8 Φf (run_int8) -> dequantize -> float Φc trained from the replay buffer."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        q = dep.feature_quant
        layers = [DenseLayer(l.weight.copy(), l.bias.copy(), l.activation) for l in dep.classifier]
        self.classifier = Classifier(layers, max_batch=dep.train.batch_size)
        self.buffer = ReplayBuffer(dep.buffer.capacity, dep.feature_count, dep.buffer.storage, float(q.scale[0]),
                                   int(q.zero_point[0]), dep.buffer.policy, dep.buffer.seed)
        self.learner = OnlineLearner(self.classifier, self.buffer, dep.train.lr, dep.train.epochs,
                                     dep.train.batch_size)

    def features(self, x: np.ndarray) -> np.ndarray:
        """int8 features [N, F] of float inputs."""
        out = run_int8(self.dep.extractor, np.asarray(x, np.float32))[self.dep.extractor.outputs[0]]
        return out.reshape(out.shape[0], -1)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.learner.predict(self.features(x))

    def predict_features(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.learner.predict(f)

    def learn(self, x: np.ndarray, label: int) -> None:
        self.learner.learn(self.features(x[None] if x.ndim == len(self.dep.extractor.tensors[
            self.dep.extractor.inputs[0]].shape) - 1 else x)[0], int(label))

    def learn_features(self, f: np.ndarray, label: int) -> None:
        self.learner.learn(f, int(label))
