"""``--custom-objects PATH.py|module``: import the code that registers custom layers before a
model is loaded (``keras.saving.register_keras_serializable`` for Keras 3,
``tf_keras.utils.register_keras_serializable`` for tf-keras, or ``get_custom_objects()``).

Each module is imported once per process: registering the same name twice is an error in tf-keras,
and a build for several targets, ``edgec ci`` and ``edgec search`` load models more than once.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from edgec.errors import EdgecError

log = logging.getLogger(__name__)

_imported: dict[str, str] = {}  # key (resolved file or module name) -> module name


def check(specs: Iterable[str]) -> tuple[str, ...]:
    """Check ``--custom-objects`` values without importing them (before TensorFlow loads).

    Raises:
        EdgecError: a .py file that does not exist.
    """
    out = []
    for spec in specs:
        spec = str(spec)
        if spec.endswith(".py") and not Path(spec).is_file():
            raise EdgecError(f"--custom-objects file '{spec}' does not exist; expected a .py file or an importable "
                             "module name")
        out.append(spec)
    return tuple(out)


def import_all(specs: Iterable[str]) -> list[str]:
    """Import each custom-objects module or file (once per process), TensorFlow and Keras 3 first
    so the module's registrations land in the libraries edgec loads models with.

    Returns:
        The module names imported.

    Raises:
        EdgecError: no such file or module, or importing it failed (the message names the reason).
    """
    specs = check(specs)
    if not specs:
        return []
    from edgec.tfcompat import import_keras3

    import_keras3()  # tf-keras as tf.keras, Keras 3 on the TensorFlow backend, before user code imports them
    return [_import_one(spec) for spec in specs]


def _import_one(spec: str) -> str:
    is_file = spec.endswith(".py")
    key = str(Path(spec).resolve()) if is_file else spec
    if key in _imported:
        return _imported[key]
    try:
        if is_file:
            file = Path(spec)
            name = f"edgec_custom_objects_{file.stem}"
            mod_spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            mod_spec.loader.exec_module(module)
        else:
            name = spec
            if str(Path.cwd()) not in sys.path:  # a module beside the model, as `python -m` finds it
                sys.path.insert(0, str(Path.cwd()))
            importlib.import_module(spec)
    except Exception as exc:  # the user's module may raise anything while importing
        if is_file:
            sys.modules.pop(f"edgec_custom_objects_{Path(spec).stem}", None)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise EdgecError(f"--custom-objects '{spec}': cannot import it: {type(exc).__name__}: {reason[:300]}") from exc
    log.info("custom objects: imported %s", spec)
    _imported[key] = name
    return name
