"""What every runtime adapter provides to the bench."""

import sys


class Runtime:
    """One artifact loaded in one runtime.

    After :meth:`load` and :meth:`set_inputs`, :attr:`invoke` is a zero-argument callable that
    runs one inference on the inputs already in place: the bench times exactly that call, the
    same thing a bare ``interpreter.invoke()`` loop calls.
    """

    name = ""

    def __init__(self, path, variant=None, threads=None, batch=1, **options):
        self.path = path
        self.variant = variant or self.name
        self.threads = threads
        self.batch = batch
        self.options = options
        self.invoke = None
        self.module = None
        self.version = None
        self.delegate = None
        self.details = {}
        self.warnings = []

    def load(self):
        raise NotImplementedError

    def input_specs(self):
        """[{name, dtype (numpy name), shape (concrete), quantization: {scale, zero_point} or None}]"""
        raise NotImplementedError

    def set_inputs(self, arrays):
        raise NotImplementedError

    def close(self):
        pass

    def info(self):
        return {"name": self.variant, "module": self.module, "version": self.version,
                "threads": self.threads, "delegate": self.delegate, "details": self.details}


def module_version(module, *dist_names):
    """A runtime's version: ``__version__``, else the installed distribution's metadata."""
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    for dist in dist_names:
        try:
            if sys.version_info >= (3, 8):
                from importlib import metadata
                return metadata.version(dist)
            import pkg_resources  # Python 3.6/3.7 (setuptools)
            return pkg_resources.get_distribution(dist).version
        except Exception:  # noqa: BLE001 - any lookup failure means "unknown"
            continue
    return None
