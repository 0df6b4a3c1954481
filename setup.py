"""Build hook: the opt-in compiled build, and the shipped examples as package data.

Everything else about the package is in pyproject.toml. By default mcsched installs as plain
Python. ``MCSCHED_COMPILE=1 pip install .`` (or ``pip wheel``) also compiles the pure core
with mypyc into ordinary extension modules, the way mypy (``MYPY_USE_MYPYC=1``) and black
(``HATCH_BUILD_HOOKS_ENABLE=1``) ship theirs: the same code, faster, and the build fails
loudly when it cannot compile, because it was asked to. ``scheduler.build_info`` tells which
build a process runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
COMPILE_ENV = "MCSCHED_COMPILE"

#: Compiled with MCSCHED_COMPILE=1: every module of these packages (new files included) ...
COMPILED_PACKAGES = ("scheduler/core", "scheduler/pipeline")
#: ... and these modules: the rest of the pure core, and the simulation loop that runs beside
#: it on every event of a replay (the contract's checker, rule mixins, runs as Python). A listed
#: file that is gone fails the build: edit this list when a module moves.
COMPILED_MODULES = (
    "scheduler/engine.py",
    "scheduler/inventory.py",
    "scheduler/backends.py",
    "scheduler/clock.py",
    "scheduler/sim/simulator.py",
)

#: Shipped inside the package as ``scheduler/examples`` (scheduler.paths.examples_dir): the
#: default catalog and contract, and the example jobs, so an install outside a checkout finds them.
EXAMPLES = ROOT / "deploy" / "examples"


def compiled_sources() -> list[str]:
    """The files mypyc compiles, relative to the project root, sorted."""
    missing = [m for m in COMPILED_MODULES if not (ROOT / m).is_file()]
    if missing:
        raise SystemExit(f"setup.py: COMPILED_MODULES names {', '.join(missing)}, which does not exist")
    found = {str(p.relative_to(ROOT)) for pkg in COMPILED_PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py")}
    return sorted(found | set(COMPILED_MODULES))


def ext_modules() -> list[Any]:
    if os.environ.get(COMPILE_ENV, "") != "1":
        return []
    from mypyc.build import mypycify  # a build requirement only when compiling (_build_backend)

    extensions: list[Any] = mypycify(compiled_sources(), opt_level="3", group_name="mcsched_core")
    return extensions


class BuildPyWithExamples(build_py):  # type: ignore[misc]  # setuptools ships no types
    """build_py that also copies ``deploy/examples`` into the package (it lives outside it in the repo)."""

    def run(self) -> None:
        super().run()
        if not EXAMPLES.is_dir():  # a package without them fails later, at `mcsched plan`: fail here instead
            raise SystemExit(f"setup.py: {EXAMPLES} is missing: the package ships it as scheduler/examples")
        target = Path(self.build_lib) / "scheduler" / "examples"
        shutil.copytree(EXAMPLES, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))


setup(ext_modules=ext_modules(), cmdclass={"build_py": BuildPyWithExamples})
