"""Hardware-in-the-loop compression search (``edgec search``).

Optuna proposes build configurations (pruning, 2:4, clustering, QAT or PTQ, precision, fine-tune
epochs and learning rate, distillation; with ``--builder`` the model's own hyperparameters and
training too); each trial is built and verified with :func:`edgec.build` and measured on the
device with the edgec agent (:mod:`edgec.measure`, here, over ssh or through a fleet collector).
The result is the Pareto front of accuracy, latency, size (and energy, where the device reads
power).

Modules: :mod:`~edgec.search.space` (the space and its TOML file), :mod:`~edgec.search.trial`
(one trial), :mod:`~edgec.search.device` (latency with a confidence interval, energy),
:mod:`~edgec.search.hyperband` (early stopping on epochs), :mod:`~edgec.search.study` (storage,
resume, retries, the worker loop), :mod:`~edgec.search.cache` (trial keys, reused builds),
:mod:`~edgec.search.report` (front, tables, plot), :mod:`~edgec.search.builder` (the ``hp``
object), :mod:`~edgec.search.api` (the API below).

    from edgec.search import Request, run
    summary = run(Request(model="model.keras", target="rpi5", fine_tune="train.npz", eval="eval.npz",
                          trials=20))
    summary["front"]
"""

from __future__ import annotations

__all__ = ["Device", "Request", "export", "run", "show"]


def __getattr__(name: str):
    if name == "Device":
        from edgec.search.device import Device

        return Device
    if name in ("Request", "run", "show", "export"):
        from edgec.search import api

        return getattr(api, name)
    raise AttributeError(name)
