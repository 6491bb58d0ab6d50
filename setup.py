"""Copies the top-level data roots (profiles/, targets/, calibration/) into wheels as edgec/_data/.

Everything else is in pyproject.toml. Editable installs read the data from the checkout itself.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOTS = {"profiles": ("*.toml",), "targets": ("*.json",), "calibration": ("*.toml",)}


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        here = Path(__file__).resolve().parent
        for root, patterns in ROOTS.items():
            out = Path(self.build_lib) / "edgec" / "_data" / root
            for pattern in patterns:
                for path in sorted((here / root).glob(pattern)):
                    out.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, out / path.name)


setup(cmdclass={"build_py": BuildPyWithData})
