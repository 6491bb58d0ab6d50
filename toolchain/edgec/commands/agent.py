"""edgec agent: the on-device profiler agent as one file."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def agent() -> None:
    """The device agent (standard library only, Python >= 3.6, one zipapp file).

    \b
    Copy it to a device and run it there:
      edgec agent bundle -o edgec-agent.pyz
      python3 edgec-agent.pyz bench model.tflite --runs 200
      python3 edgec-agent.pyz detect
    """


@agent.command()
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), default=Path("edgec-agent.pyz"),
              show_default=True, help="Zipapp file to write.")
def bundle(out: Path) -> None:
    """Write the agent as a zipapp (python3 FILE bench|detect|version)."""
    from edgec.agent import bundle as agent_bundle
    from edgec.errors import EdgecError
    from edgec.util import sha256_file

    if out.exists() and out.is_dir():
        raise EdgecError(f"'{out}' is a directory; expected a file name such as edgec-agent.pyz")
    if not out.parent.exists():
        raise EdgecError(f"directory '{out.parent}' does not exist")
    try:
        path = agent_bundle.build(str(out))
    except OSError as exc:
        raise EdgecError(f"cannot write '{out}': {exc.strerror or exc}") from exc
    click.echo(f"{path} ({Path(path).stat().st_size} bytes, sha256 {sha256_file(Path(path))[:16]})")
