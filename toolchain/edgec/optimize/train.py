"""Fine-tuning shared by the compression steps: held-out split, distillation loss, learning-rate
schedule, best-epoch restore.

The recovery every step gets by default:

* distillation from the untouched float model when the build cuts the architecture (channel
  surgery, low-rank; ``--distill``/``--no-distill`` decide otherwise): its soft targets carry what
  the cut model lost in more detail than the labels (weight pruning and QAT recover better
  on the labels within the default epochs: see :func:`edgec.optimize.spec.default_distill`);
* a learning-rate schedule: a linear warm-up over the first epoch (Adam's first steps on a
  freshly cut model are its largest, and undo the weights that survived), then a cosine decay
  to :data:`FINAL_LR_SHARE` of the peak, so the last epochs settle instead of jumping around
  the optimum;
* best-epoch restore: the weights of the epoch with the lowest loss on a held-out slice of the
  fine-tune data (never the eval data) are kept, and a step stops after :data:`PATIENCE`
  epochs without a better one. The loss, not the accuracy: on a held-out slice of a few hundred
  samples or fewer the accuracy moves in steps of one sample and saturates near the float
  model's, so an early epoch that reached the top accuracy by chance was kept over later ones
  that fit the held-out data far better, and the patience ran out while the loss still fell
  (the separable digits net after channel surgery: best epoch 3 of 20, stopped at 7).

Distillation (Hinton et al., 2015) mixes the labels' cross-entropy with the KL divergence between
the teacher's and the student's softmax at temperature T (scaled by T^2 so its gradients keep
their size as T grows). The teacher is the untouched float model; its logits on the fine-tune
inputs are computed once up front (the inputs do not change between epochs), and travel with
the labels as one target array, so plain ``model.fit`` and TF-MOT's callbacks keep working.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import numpy as np

from edgec.calibration import Dataset
from edgec.errors import EdgecError
from edgec.optimize.spec import OptimizeSpec
from edgec.progress import Progress

log = logging.getLogger(__name__)

VAL_SHARE = 0.1  # held-out share of the fine-tune data used for early stopping
MIN_SAMPLES = 10
PATIENCE = 4  # epochs without a better held-out accuracy before a step stops
WARMUP_EPOCHS = 1  # linear warm-up of the learning rate (at most half the epochs)
FINAL_LR_SHARE = 0.02  # the cosine decay ends at this share of the peak learning rate


@dataclasses.dataclass
class FineTuneData:
    """Fine-tune data split into training and held-out parts, with teacher logits if distilling."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: int
    from_logits: bool  # the model outputs logits (else probabilities)
    source: str
    teacher_train: np.ndarray | None = None
    teacher_val: np.ndarray | None = None

    def describe(self) -> dict[str, Any]:
        from edgec.calibration import count

        return {"source": self.source, "train_samples": count(self.x_train),
                "held_out_samples": count(self.x_val), "classes": self.classes,
                "model_output": "logits" if self.from_logits else "probabilities"}

    def targets(self, val: bool = False) -> np.ndarray:
        """Labels, or labels packed with the teacher's logits as one float array when distilling."""
        y, teacher = (self.y_val, self.teacher_val) if val else (self.y_train, self.teacher_train)
        if teacher is None:
            return y
        return np.concatenate([y[:, None].astype(np.float32), teacher.astype(np.float32)], axis=1)


def predict(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Inference-mode outputs of a single-output model, as float32."""
    # x: an array, or {input name: array} for several inputs
    from edgec.calibration import count, take

    outs = [np.asarray(model(take(x, slice(i, i + batch_size)), training=False), dtype=np.float32)
            for i in range(0, count(x), batch_size)]
    return np.concatenate(outs)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x).argmax(axis=1) == y).mean())


def prepare(model, data: Dataset, spec: OptimizeSpec) -> FineTuneData:
    """Check that the model is a classifier the labels fit, split off the held-out slice and, when
    distilling, compute the teacher's logits.

    Raises:
        EdgecError: the model is not a single-output classifier, the labels do not fit it, or
            there are too few samples.
    """
    out_shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else None
    if out_shape is None or len(out_shape) != 2 or not out_shape[1] or out_shape[1] < 2:
        raise EdgecError(
            f"fine-tuning needs a single-output classifier with output (batch, classes); model "
            f"'{model.name}' has outputs {[tuple(o.shape) for o in model.outputs]}"
        )
    classes = int(out_shape[1])
    if data.y is None:
        raise EdgecError(f"fine-tune data '{data.source}' has no labels; give an .npz with arrays 'x' and 'y'")
    if len(data) < MIN_SAMPLES:
        raise EdgecError(f"fine-tune data '{data.source}' has {len(data)} samples; need at least {MIN_SAMPLES}")
    y = np.asarray(data.y, dtype=np.int64)
    if y.min() < 0 or y.max() >= classes:
        raise EdgecError(f"fine-tune labels in '{data.source}' range over {int(y.min())}..{int(y.max())}, "
                         f"but the model has {classes} classes (0..{classes - 1})")
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(data))
    n_val = max(1, int(round(len(data) * VAL_SHARE)))
    val, train = order[:n_val], order[n_val:]
    from edgec.calibration import take

    probe = predict(model, take(data.x, slice(0, min(len(data), 256))))
    from_logits = not (probe.min() >= 0.0 and probe.max() <= 1.0 and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3))
    ft = FineTuneData(x_train=take(data.x, train), y_train=y[train], x_val=take(data.x, val), y_val=y[val], classes=classes,
                      from_logits=from_logits, source=data.source)
    if spec.distill:
        ft.teacher_train = _as_logits(predict(model, ft.x_train), from_logits)
        ft.teacher_val = _as_logits(predict(model, ft.x_val), from_logits)
    return ft


def _as_logits(out: np.ndarray, from_logits: bool) -> np.ndarray:
    # log-probabilities differ from logits by a per-sample constant, which softmax ignores
    return out if from_logits else np.log(np.clip(out, 1e-7, 1.0))


def _loss_and_metric(data: FineTuneData, spec: OptimizeSpec):
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    from_logits = data.from_logits
    temperature, weight = spec.temperature, spec.distill_weight

    def student_logits(y_pred):
        return y_pred if from_logits else tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0))

    if data.teacher_train is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        return loss, keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def distillation_loss(y_true, y_pred):
        labels = tf.cast(y_true[:, 0], tf.int32)
        teacher = y_true[:, 1:]
        logits = student_logits(y_pred)
        hard = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        soft_teacher = tf.nn.softmax(teacher / temperature)
        log_student = tf.nn.log_softmax(logits / temperature)
        kl = tf.reduce_sum(soft_teacher * (tf.math.log(tf.clip_by_value(soft_teacher, 1e-12, 1.0)) - log_student),
                           axis=-1)
        return (1.0 - weight) * hard + weight * (temperature ** 2) * kl

    def packed_accuracy(y_true, y_pred):
        labels = tf.cast(y_true[:, 0], tf.int64)
        return tf.cast(tf.equal(tf.argmax(y_pred, axis=-1), labels), tf.float32)

    return distillation_loss, keras.metrics.MeanMetricWrapper(packed_accuracy, name="accuracy")


def fine_tune(model, data: FineTuneData, spec: OptimizeSpec, *, step: str, progress: Progress,
              callbacks: list | None = None, select_from_epoch: int = 0) -> dict[str, Any]:
    """Train ``model`` in place on the fine-tune data and keep its best held-out weights.

    Args:
        model: the (wrapped) tf-keras model of one compression step.
        data: from :func:`prepare`.
        spec: epochs, batch size, learning rate, seed, distillation settings.
        step: step name for the progress bar and the log.
        progress: shows epoch, loss and accuracy.
        callbacks: step-specific Keras callbacks (TF-MOT's UpdatePruningStep, ...).
        select_from_epoch: first epoch (0-based) whose weights may be kept; earlier epochs are
            still ramping up (pruning sparsity) and are neither kept nor counted for patience.

    Returns:
        Epochs run, best epoch, whether it stopped early, last training loss/accuracy and the
        best held-out accuracy.
    """
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    set_seed(spec.seed)
    loss, metric = _loss_and_metric(data, spec)
    lr = spec.learning_rate(step)
    epochs = spec.epochs_for(step)
    steps_per_epoch = max(1, math.ceil(len(data.y_train) / spec.batch_size))  # y: one array, any inputs
    schedule, schedule_info = lr_schedule(lr, steps_per_epoch, epochs)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=[metric])
    best = _best_weights(select_from_epoch, PATIENCE)
    t0 = time.perf_counter()
    with progress.task(f"fine-tune: {step}", total=epochs) as task:
        history = model.fit(
            data.x_train, data.targets(), validation_data=(data.x_val, data.targets(val=True)),
            epochs=epochs, batch_size=spec.batch_size, shuffle=True, verbose=0,
            callbacks=[*(callbacks or []), _progress_callback(task, step, epochs), best],
        )
        task.advance(epochs - len(history.history.get("loss", [])))
    h = history.history
    if not h.get("loss") or not all(math.isfinite(v) for v in h["loss"]):
        raise EdgecError(f"fine-tuning diverged in step '{step}' (loss {h.get('loss')}); lower --lr (now {lr:g})")
    return {
        "loss": (f"distillation (T={spec.temperature:g}, teacher weight {spec.distill_weight:g})"
                 if data.teacher_train is not None else "cross-entropy"),
        "lr_schedule": schedule_info,
        "epochs_run": len(h["loss"]),
        "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
        "stopped_early": len(h["loss"]) < epochs,
        "train_loss": round(float(h["loss"][-1]), 5),
        "train_accuracy": round(float(h["accuracy"][-1]), 5),
        "held_out_accuracy": None if best.best is None else round(best.best[1], 5),
        "held_out_loss": None if best.best is None else round(best.best[0], 5),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def lr_schedule(peak: float, steps_per_epoch: int, epochs: int):
    """Linear warm-up to ``peak`` over :data:`WARMUP_EPOCHS`, then a cosine decay to
    :data:`FINAL_LR_SHARE` of ``peak`` at the last step; the schedule and its description."""
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    total = max(1, steps_per_epoch * epochs)
    warmup = min(steps_per_epoch * WARMUP_EPOCHS, total // 2)
    final = peak * FINAL_LR_SHARE

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = peak * (step + 1.0) / float(max(1, warmup))
            progress = tf.clip_by_value((step - warmup) / float(max(1, total - warmup)), 0.0, 1.0)
            decayed = final + 0.5 * (peak - final) * (1.0 + tf.cos(math.pi * progress))
            return tf.where(step < warmup, warm, decayed)

        def get_config(self):
            return {"peak": peak, "warmup_steps": warmup, "total_steps": total, "final": final}

    return WarmupCosine(), {"kind": "warmup_cosine", "peak": peak, "warmup_steps": warmup,
                            "total_steps": total, "final": final}


def _progress_callback(task, step: str, epochs: int):
    """A Keras callback showing epoch, loss and accuracy on the progress bar."""
    from edgec.tfcompat import tf_and_keras

    class ProgressCallback(tf_and_keras()[1].callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            text = (f"epoch {epoch + 1}/{epochs} loss {logs.get('loss', float('nan')):.4f} "
                    f"acc {logs.get('accuracy', float('nan')) * 100:.1f}% "
                    f"held-out {logs.get('val_accuracy', float('nan')) * 100:.1f}%")
            task.advance(1)
            task.info(text)
            log.info("fine-tune %s: %s", step, text)

    return ProgressCallback()


def _best_weights(start: int, patience: int):
    """A Keras callback keeping the weights of the best held-out epoch (lowest loss, then highest
    accuracy).

    It stops training after ``patience`` epochs without improvement and restores the best
    weights at the end. Epochs before ``start`` are neither kept nor counted.
    """
    from edgec.tfcompat import tf_and_keras

    class BestWeights(tf_and_keras()[1].callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = None
            self.best_epoch = None
            self.best_weights = None
            self.wait = 0

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if epoch < start:
                return
            loss, acc = float(logs.get("val_loss", math.inf)), float(logs.get("val_accuracy", 0.0))
            if math.isfinite(loss) and (self.best is None or (loss, -acc) < (self.best[0], -self.best[1])):
                self.best, self.best_epoch, self.wait = (loss, acc), epoch, 0
                self.best_weights = self.model.get_weights()
                return
            self.wait += 1
            if self.wait >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestWeights()
