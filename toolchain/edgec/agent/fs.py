"""Reading device files through a root directory, so tests run against fixture trees.

Every path the agent reads (``/proc``, ``/sys``, ``/etc``, ``/dev``, ``/var``) goes through a
:class:`Root`. ``Root("/")`` is the running device; ``Root("tests/agent/fixtures/jetson-nano-jp4")``
is a copy of a real device's layout.
"""

import glob as _glob
import hashlib
import os


def sha256_file(path):
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Root:
    """A device filesystem seen from ``root``; paths are given and returned as on the device."""

    def __init__(self, root="/"):
        self.root = os.path.abspath(root or "/")

    @property
    def is_live(self):
        """True when this is the running system's own root (commands may then be run)."""
        return self.root == "/"

    def path(self, device_path):
        """The host path of ``device_path`` (an absolute path on the device)."""
        return os.path.join(self.root, device_path.lstrip("/"))

    def exists(self, device_path):
        return os.path.exists(self.path(device_path))

    def read(self, device_path, default=None):
        """The file's text, stripped of whitespace and NUL bytes; ``default`` when unreadable."""
        try:
            with open(self.path(device_path), "rb") as fh:
                data = fh.read()
        except OSError:
            return default
        return data.decode("utf-8", "replace").replace("\x00", "").strip()

    def read_error(self, device_path):
        """Why ``device_path`` cannot be read (``None`` when it can)."""
        try:
            with open(self.path(device_path), "rb") as fh:
                fh.read(64)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    def read_int(self, device_path, default=None):
        text = self.read(device_path)
        if text is None:
            return default
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            return default

    def glob(self, pattern):
        """Device paths matching ``pattern`` (sorted naturally: hwmon2 before hwmon10)."""
        base = self.root.rstrip("/")
        found = []
        for host_path in _glob.glob(self.path(pattern)):
            found.append("/" + os.path.relpath(host_path, base) if base else host_path)
        return sorted(found, key=natural_key)


def natural_key(text):
    """Sort key that orders embedded numbers numerically."""
    parts = []
    number = ""
    word = ""
    for ch in text:
        if ch.isdigit():
            if word:
                parts.append((1, word, 0))
                word = ""
            number += ch
        else:
            if number:
                parts.append((0, "", int(number)))
                number = ""
            word += ch
    if number:
        parts.append((0, "", int(number)))
    if word:
        parts.append((1, word, 0))
    return parts
