"""The ``mcsched`` command line: a thin shell over the engine, ledger and runtime.

Every ``MCSchedError`` becomes one line on stderr and its exit code; a traceback for user
error is a bug. Commands live in one module per area and register on the shared ``app``.
"""

from __future__ import annotations

import sys

import click

from scheduler.cli import audit, offline, runtime, serve, simulate  # noqa: F401  (register commands)
from scheduler.cli.app import app, err
from scheduler.errors import MCSchedError, SpecError, SpecErrors

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and turns known errors into one-line messages."""
    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except SpecErrors as exc:
        for e in exc.errors:
            err.print(e.one_line(), markup=False)
        sys.exit(exc.exit_code)
    except SpecError as exc:
        err.print(exc.one_line(), markup=False)
        sys.exit(exc.exit_code)
    except MCSchedError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted", markup=False)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


