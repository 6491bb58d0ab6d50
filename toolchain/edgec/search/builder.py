"""``--builder module:function``: the model's own hyperparameters in the search.

The function takes an ``hp`` object and returns an untrained tf-keras classifier::

    def build(hp):
        width = hp.int("width", 8, 64, log=True)
        depth = hp.int("depth", 1, 3)
        act = hp.choice("activation", ["relu", "swish"])
        ...
        return keras.Model(inputs, logits)

``hp.int``, ``hp.float``, ``hp.choice`` and ``hp.bool`` draw from the Optuna trial (the
parameters appear in the study as ``model.NAME``). edgec trains the model on ``--train`` data with
the trial's optimizer, learning rate, batch size and epochs, judging it at Hyperband's rungs on
the ``--eval`` accuracy, and then runs the compression part of the trial on the trained model.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.util import load_function

log = logging.getLogger(__name__)

PREFIX = "model."
_VALUE_TYPES = (type(None), bool, int, float, str)


class HP:
    """The ``hp`` object a builder function receives, backed by an Optuna trial.

    Each method returns the trial's value for ``name``; calling it again with the same name
    returns the same value. ``values`` holds what was drawn.
    """

    def __init__(self, trial):
        self._trial = trial
        self.values: dict[str, Any] = {}

    def _keep(self, name: str, value: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise EdgecError(f"hp parameter names are non-empty strings, got {name!r}")
        self.values[name] = value
        return value

    def int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        """An integer in [low, high] (every ``step``; on a log scale with ``log``)."""
        return self._keep(name, self._trial.suggest_int(PREFIX + name, low, high, step=step, log=log))

    def float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        """A float in [low, high] (every ``step``; on a log scale with ``log``)."""
        return self._keep(name, self._trial.suggest_float(PREFIX + name, low, high, step=step, log=log))

    def choice(self, name: str, options) -> Any:
        """One of ``options`` (None, booleans, numbers or strings)."""
        options = list(options)
        if not options or not all(isinstance(o, _VALUE_TYPES) for o in options):
            raise EdgecError(f"hp.choice('{name}', {options!r}): give a non-empty list of None, booleans, numbers "
                             "or strings")
        return self._keep(name, self._trial.suggest_categorical(PREFIX + name, options))

    def bool(self, name: str) -> bool:
        """True or False."""
        return self._keep(name, bool(self._trial.suggest_categorical(PREFIX + name, [False, True])))


class FixedHP(HP):
    """An ``hp`` that answers recorded values (a trial's model built again)."""

    def __init__(self, values: dict[str, Any]):
        super().__init__(None)
        self._fixed = dict(values)

    def _get(self, name: str) -> Any:
        if name not in self._fixed:
            raise EdgecError(f"the builder asks for hp '{name}', which the recorded trial does not have")
        return self._keep(name, self._fixed[name])

    def int(self, name, low, high, *, step=1, log=False):
        return self._get(name)

    def float(self, name, low, high, *, step=None, log=False):
        return self._get(name)

    def choice(self, name, options):
        return self._get(name)

    def bool(self, name):
        return self._get(name)


def load(spec: str) -> tuple[Callable, dict[str, Any]]:
    """The builder function of ``module:function`` or ``file.py:function``, and what identifies it
    (the spec and the sha256 of its source file).

    Raises:
        EdgecError: no such module, file or function.
    """
    from edgec.search.cache import data_digest

    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise EdgecError(f"--builder '{spec}': expected module:function or file.py:function")
    func = load_function(spec, f"--builder '{spec}'", "_edgec_builder_")
    try:
        source = inspect.getsourcefile(func)
    except TypeError:
        source = None
    return func, {"spec": spec, "source_sha256": data_digest(source) if source else None}


def make(func: Callable, hp: HP, seed: int):
    """Call the builder with ``hp``, seeded, layer names as in a fresh session.

    Raises:
        EdgecError: the builder raised, or returned something other than a tf-keras model.
    """
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    set_seed(seed)
    keras.backend.clear_session()
    keras.backend.reset_uids()
    try:
        model = func(hp)
    except EdgecError:
        raise
    except Exception as exc:
        raise EdgecError(f"the builder raised {type(exc).__name__}: {exc} (hp {hp.values})") from exc
    if not isinstance(model, keras.Model):
        raise EdgecError(f"the builder returned {type(model).__name__}; expected an untrained tf-keras model "
                         "(import tf_keras as keras, or tensorflow with TF_USE_LEGACY_KERAS=1)")
    return model


def _optimizer(keras, name: str, lr: float):
    return {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
            "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)}[name](
        learning_rate=lr)


def load_data(model, spec: str, purpose: str, seed: int):
    """Labelled data for ``model`` with the preprocessing a build would give it."""
    from edgec import calibration
    from edgec.calibration import inputs
    from edgec.model_io import data_shapes

    shape = data_shapes(model)  # {input name: shape} for several inputs
    preprocessing, _ = inputs.resolve(model)
    return calibration.load(spec, shape, purpose=purpose, seed=seed, need_labels=True, preprocess=preprocessing)


def train(model, train_data, eval_data, training, seed: int, rungs: list[int],
          judge: Callable[[int, float], bool]) -> dict[str, Any]:
    """Train ``model`` in place; at each epoch in ``rungs`` its eval accuracy (%) goes to
    ``judge(epoch, accuracy)``, which returns True to stop the trial there.

    Returns:
        ``epochs_run``, ``stopped_at`` (an epoch, or None), ``accuracy`` (%, at the end),
        ``seconds``.

    Raises:
        EdgecError: the model is not a classifier the labels fit, or training diverged.
    """
    from edgec.optimize.train import accuracy, predict
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise EdgecError(f"--builder models must be single-output classifiers (batch, classes); '{model.name}' has "
                         f"outputs {[tuple(o.shape) for o in model.outputs]}")
    classes = int(model.outputs[0].shape[1])
    y = np.asarray(train_data.y, dtype=np.int64)
    if y.min() < 0 or y.max() >= classes:
        raise EdgecError(f"--train labels range over {int(y.min())}..{int(y.max())}, but the model has {classes} "
                         "classes")
    from edgec.calibration import take

    probe = predict(model, take(train_data.x, slice(0, 64)))
    from_logits = not (probe.min() >= 0 and probe.max() <= 1 and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3))
    set_seed(seed)
    model.compile(optimizer=_optimizer(keras, training.optimizer, training.lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    state: dict[str, Any] = {"stopped_at": None}
    checkpoints = set(rungs)

    class Rungs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            done = epoch + 1
            if done in checkpoints:
                acc = round(accuracy(self.model, eval_data.x, eval_data.y) * 100, 4)
                if judge(done, acc):
                    state["stopped_at"] = done
                    self.model.stop_training = True

    t0 = time.perf_counter()
    history = model.fit(train_data.x, y, epochs=training.epochs, batch_size=training.batch_size, shuffle=True,
                        verbose=0, callbacks=[Rungs()])
    losses = history.history.get("loss") or []
    if not losses or not np.all(np.isfinite(losses)):
        raise EdgecError(f"training diverged (loss {losses[-3:]}) with {training.label()}")
    return {"epochs_run": len(losses), "stopped_at": state["stopped_at"],
            "accuracy": round(accuracy(model, eval_data.x, eval_data.y) * 100, 4),
            "seconds": round(time.perf_counter() - t0, 3)}
