"""Host simulator of a deployment: the reference the generated device code is compared against."""
from __future__ import annotations

import numpy as np

from .buffer import OnlineLearner, ReplayBuffer
from .deployment import Deployment
from .interpreter_int8 import run_int8
from .train import Classifier


def learner_for(dep: Deployment, capacity: int | None = None, storage: str | None = None, lr: float | None = None,
                epochs: int | None = None) -> OnlineLearner:
    """A fresh learner with the deployment's classifier, head and buffer (settings overridable)."""
    q, tq = dep.feature_quant, dep.target_quant
    layers = [l.copy() for l in dep.classifier]
    clf = Classifier(layers, max_batch=dep.train.batch_size, loss=dep.loss, train=dep.train.mode)
    storage = storage or dep.buffer.storage
    int8_targets = tq is not None and storage == "int8"
    buf = ReplayBuffer(capacity or dep.buffer.capacity, dep.feature_count, storage, float(q.scale[0]),
                       int(q.zero_point[0]), dep.buffer.policy, dep.buffer.seed, clf.target_count,
                       float(tq.scale[0]) if int8_targets else None, int(tq.zero_point[0]) if int8_targets else None)
    return OnlineLearner(clf, buf, dep.train.lr if lr is None else lr, dep.train.epochs if epochs is None else epochs,
                         dep.train.batch_size)


class Simulator:
    """int8 Φf (run_int8) -> dequantize -> float Φc trained from the replay buffer."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.learner = learner_for(dep)
        self.classifier, self.buffer = self.learner.classifier, self.learner.buffer

    def features(self, x: np.ndarray) -> np.ndarray:
        """int8 features [N, F] of float inputs."""
        out = run_int8(self.dep.extractor, np.asarray(x, np.float32))[self.dep.extractor.outputs[0]]
        return out.reshape(out.shape[0], -1)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.learner.predict(self.features(x))

    def predict_features(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.learner.predict(f)

    def target_of(self, x: np.ndarray, label: int | np.ndarray | None) -> int | np.ndarray:
        """A sample's label, or its regression target (default: the input itself for an autoencoder)."""
        if label is not None:
            return label if self.dep.loss == "mse" else int(label)
        if self.dep.loss == "mse" and self.dep.target == "input":
            return np.asarray(x, np.float32).reshape(-1)
        raise ValueError("this sample needs a label" if self.dep.loss != "mse" else "this sample needs a target")

    def learn(self, x: np.ndarray, label: int | np.ndarray | None = None) -> None:
        x = np.asarray(x, np.float32)
        one = x.ndim == len(self.dep.extractor.tensors[self.dep.extractor.inputs[0]].shape) - 1
        self.learner.learn(self.features(x[None] if one else x)[0], self.target_of(x, label))

    def learn_features(self, f: np.ndarray, label: int | np.ndarray) -> None:
        self.learner.learn(f, label if self.dep.loss == "mse" else int(label))
