"""Package the agent as one zipapp file that runs with any Python >= 3.6 on the device.

The archive holds this package as ``edgec_agent/`` (its imports are relative, so the name does
not matter) and a ``__main__.py`` that calls its command line. Entries carry a fixed timestamp,
so the same sources always give the same bytes (and sha256).
"""

import os
import stat
import zipfile

SHEBANG = b"#!/usr/bin/env python3\n"
PACKAGE = "edgec_agent"
MAIN = (
    "# edgec device agent (zipapp): python3 edgec-agent.pyz --help\n"
    "import sys\n"
    "from edgec_agent.cli import main\n"
    "sys.exit(main())\n"
)
_EPOCH = (2020, 1, 1, 0, 0, 0)


def sources():
    """(archive name, file path) of every module of the agent, sorted."""
    here = os.path.dirname(os.path.abspath(__file__))
    found = []
    for dirpath, dirnames, filenames in os.walk(here):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, here).replace(os.sep, "/")
                found.append((PACKAGE + "/" + rel, path))
    return sorted(found)


def build(out_path):
    """Write the zipapp to ``out_path`` (atomically) and return its path."""
    out_path = os.path.abspath(out_path)
    tmp = out_path + ".tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(SHEBANG)
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                entries = [("__main__.py", MAIN.encode("utf-8"))]
                for arcname, path in sources():
                    with open(path, "rb") as src:
                        entries.append((arcname, src.read()))
                for arcname, data in entries:
                    info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    zf.writestr(info, data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out_path
