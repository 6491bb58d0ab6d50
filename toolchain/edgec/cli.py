"""Command-line interface: a thin Click layer over the Python API.

Subcommands are loaded lazily from :data:`COMMANDS`, so ``edgec --help`` imports no
TensorFlow (each command module keeps its heavy imports inside the function that runs).
"""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from edgec.errors import EXIT_INTERNAL, EdgecError, Interrupted
from edgec.util import disk_error
from edgec.version import __version__

#: command name -> "module:attribute" of a click.Command; no registration by import side effects.
COMMANDS: dict[str, str] = {
    "agent": "edgec.commands.agent:agent",
    "analyze": "edgec.commands.analyze:analyze",
    "build": "edgec.commands.build:build",
    "ci": "edgec.commands.ci:ci",
    "dashboard": "edgec.commands.dashboard:dashboard",
    "devices": "edgec.commands.devices:devices",
    "inspect": "edgec.commands.inspect:inspect",
    "jobs": "edgec.commands.jobs:jobs",
    "profile": "edgec.commands.profile:profile",
    "report": "edgec.commands.report:report",
    "search": "edgec.commands.search:search",
    "serve": "edgec.commands.serve:serve",
    "targets": "edgec.commands.targets:targets",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used (or listed by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attr = COMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        import signal

        for signum in (signal.SIGTERM, signal.SIGHUP):  # a CI timeout, docker stop, a closed terminal
            if signal.getsignal(signum) is signal.SIG_DFL:  # an ignored one (nohup) stays ignored
                signal.signal(signum, _raise_interrupted)
        try:
            return super().invoke(ctx)
        except EdgecError as exc:
            if ctx.obj and ctx.obj.get("debug"):  # the traceback, and the same exit code as without --debug
                traceback.print_exc()
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Interrupted as exc:
            _stop_listening()
            click.echo(f"Error: interrupted ({exc.name}); partial outputs removed", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            _stop_listening()
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # a bug, not a user error: one line unless --debug
            problem = disk_error(exc)
            if problem is not None:  # a full disk or a read-only folder: the user's to fix
                if ctx.obj and ctx.obj.get("debug"):
                    traceback.print_exc()
                click.echo(f"Error: {problem}", err=True)
                ctx.exit(problem.exit_code)
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
                ctx.exit(EXIT_INTERNAL)
            click.echo(
                f"Error: internal error ({type(exc).__name__}: {exc}); "
                "rerun with --debug for the traceback",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


def _stop_listening() -> None:
    """The stop is handled: a further Ctrl-C while the process winds down is ignored, so it can
    neither raise into the cleanup nor turn exit code 130 into a death by SIGINT. Ignored at the C
    level: Python's finalization resets a Python-function handler to the default action (death),
    but leaves an ignored signal ignored. Only for the ``edgec`` program itself: a command run
    inside a longer Python process (tests, notebooks) leaves that process's Ctrl-C as it was."""
    import signal
    import threading

    if _PROGRAM and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def _restore_environment(saved: dict) -> None:
    import os

    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgec")
@click.option("--debug", is_flag=True, help="Show full tracebacks and library logs.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """edgec: build small, fast, verified artifacts for edge devices and measure them there.

    \b
    Common case:
      edgec build model.keras --target rpi5 --calib calib.npz --eval eval.npz
      edgec inspect dist/rpi5/model.tflite
      edgec targets
    """
    import logging
    import os

    if debug:
        # for the command and the processes it starts; put back when it ends, so a command run
        # inside a longer Python process (tests, notebooks) leaves later commands as they were
        saved = {key: os.environ.get(key) for key in ("EDGEC_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
        os.environ["EDGEC_DEBUG"] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow loads later, inside the command
        ctx.call_on_close(lambda: _restore_environment(saved))
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.DEBUG if (debug or verbose > 1) else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


#: set by :func:`main`: this process is the ``edgec`` program, not a host of a command run in it
_PROGRAM = False


def main() -> None:
    """Console-script entry point."""
    global _PROGRAM
    _PROGRAM = True
    cli(prog_name="edgec")


if __name__ == "__main__":
    main()
