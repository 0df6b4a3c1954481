"""The ``mcsched`` command line: a thin shell over the engine, ledger and runtime.

Every ``MCSchedError`` becomes one line on stderr and its exit code, and every usage error
(unknown command or option, missing argument, bad value) one line with a hint and exit 2,
like any CLI; a traceback for user error is a bug. Commands live in one module per area and
register on the shared ``app``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import sys
import time
from types import ModuleType
from typing import Any

import typer
from typer.main import get_command_name

from scheduler.cli import audit, offline, runtime, serve, simulate  # noqa: F401  (register commands)
from scheduler.cli.app import app, err, print_spec_errors
from scheduler.errors import MCSchedError, SpecError, SpecErrors
from scheduler.gctune import tune_gc

__all__ = ["app", "main"]


def _click_exceptions() -> ModuleType:
    """The click that typer's commands raise from: recent typer bundles its own (``typer._click``),
    so catching the separately installed ``click``'s exceptions would miss every usage error."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # older typer runs on the installed click
        return importlib.import_module("click.exceptions")


def usage_line(exc: Any) -> str:
    """One line for a usage error: the command, click's message (with its suggestion) and where to get help."""
    message = " ".join(exc.format_message().replace("Value error, ", "").split())
    if message and message[-1] not in ".?!":
        message += "."
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "mcsched"
    return f"{path}: {message} Try '{path} --help' for help."


def app_for(args: list[str]) -> typer.Typer:
    """The app to run ``args`` with: when they start with a command's name, a copy that holds that command only.

    Typer turns every registered command into a click command (signatures, type hints,
    parameters) before it parses anything, a fixed cost of every run that grows with the
    command set; a command runs, and parses and fails, the same without its siblings. The
    full app is used whenever the siblings can show: no command, a root option first
    (``--help``, ``--version``), or an unknown name (its error suggests the close ones).
    """
    if not args or args[0].startswith("-"):
        return app
    commands = [
        c for c in app.registered_commands if args[0] == (c.name or get_command_name(getattr(c.callback, "__name__", "")))
    ]
    groups = [g for g in app.registered_groups if args[0] == g.name]
    if len(commands) + len(groups) != 1:
        return app
    slim = copy.copy(app)  # shares the callback and settings; only the lists below differ
    slim.registered_commands, slim.registered_groups = commands, groups
    return slim


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and turns known errors into one-line messages.

    Called without ``argv`` (the ``mcsched`` script, ``python -m scheduler``), it owns the
    process and tunes its collector (``scheduler/gctune.py``: 100k-job lists are ~40% collector
    time with the defaults); a caller that passes ``argv`` (tests) keeps its own.
    """
    click_exc = _click_exceptions()
    if argv is None:
        tune_gc()
    args = sys.argv[1:] if argv is None else argv
    try:
        rc = app_for(args)(args=args, standalone_mode=False, prog_name="mcsched")
        if argv is None and args[:1] == ["run"] and isinstance(rc, int):  # the Ray job driver's end (typer returns its Exit code)
            exit_driver(rc)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except SpecErrors as exc:  # thousands of them: the first few and a count
        print_spec_errors(exc.errors)
        sys.exit(exc.exit_code)
    except SpecError as exc:
        err.print(exc.one_line(), markup=False)
        sys.exit(exc.exit_code)
    except MCSchedError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except click_exc.NoArgsIsHelpError as exc:  # `mcsched` or `mcsched audit` alone: the help text
        if exc.format_message().strip():  # typer has already printed the help itself
            exc.show()
        sys.exit(exc.exit_code)
    except click_exc.ClickException as exc:  # usage errors: one line with a hint, exit 2
        err.print(usage_line(exc), markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except (typer.Abort, getattr(click_exc, "Abort", typer.Abort), KeyboardInterrupt):
        err.print("aborted", markup=False)
        sys.exit(130)
    except (typer.Exit, getattr(click_exc, "Exit", typer.Exit)) as exc:
        sys.exit(exc.exit_code)


DRIVER_LOG_DRAIN_SECONDS = 0.4


def exit_driver(code: int) -> None:
    """End the Ray job driver (``mcsched run``) now that its job has ended and the scheduler has
    acknowledged it: flush the output and leave without ``ray.shutdown`` and interpreter teardown.

    Those take ~1 s per job (a tenth of a 10 s job; benchmarks/ray_e2e.py) and do nothing Ray does
    not do anyway when a driver's process ends, however it ends (``ray job stop`` may kill it):
    the raylet ends its Ray job, its workers and its placement groups. The exit code is the job's.
    It waits ``DRIVER_LOG_DRAIN_SECONDS`` first: the workload's last lines reach this driver's
    output (the Ray job's log) through Ray's log monitor, which polls every 0.1 s.
    """
    time.sleep(DRIVER_LOG_DRAIN_SECONDS)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
