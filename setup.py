"""Build hook: compiles mcsched's pure placement core with mypyc when it can.

Everything else about the package is in pyproject.toml. The core (``scheduler.native.CORE_MODULES``)
is strictly typed Python that mypyc turns into C extensions for about twice the throughput;
each extension is optional, so a machine without a C compiler installs the same package as
Python. ``MCSCHED_NATIVE=0`` skips compiling. The build records a digest of the sources it
compiled, so an edited core is run from its source until the next build (scheduler/native.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _native_module() -> Any:
    """scheduler/native.py on its own (importing the package would run its import-time selection)."""
    spec = importlib.util.spec_from_file_location("_mcsched_native", ROOT / "scheduler" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = _native_module()


def native_extensions() -> list[Any]:
    NATIVE.STAMP.unlink(missing_ok=True)  # written again only once every extension is built (StampedBuildExt)
    if os.environ.get("MCSCHED_NATIVE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without the build requirements (e.g. --no-build-isolation)
        return []
    paths = [str(NATIVE.source_path(m, ROOT).relative_to(ROOT)) for m in NATIVE.CORE_MODULES]
    try:
        extensions: list[Any] = mypycify(paths, opt_level="3", group_name="mcsched_core")
    except (Exception, SystemExit) as exc:  # mypyc's own type check failed: install the source as it is
        print(f"mcsched: not compiling the placement core ({exc!r}); installing it as Python", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # no C compiler: a warning, and the package installs as Python
    return extensions


class StampedBuildExt(build_ext):  # type: ignore[misc]  # setuptools ships no types
    """build_ext that records which sources the compiled core was built from, once it all built."""

    def run(self) -> None:
        super().run()
        if not self.extensions:
            return
        built = [Path(self.get_ext_fullpath(ext.name)) for ext in self.extensions]
        if all(path.exists() for path in built):
            stamp_dir = Path(self.get_ext_fullpath("scheduler.engine")).parent
            (stamp_dir / NATIVE.STAMP.name).write_text(f"{NATIVE.source_digest(ROOT)} mypyc\n")


setup(ext_modules=native_extensions(), cmdclass={"build_ext": StampedBuildExt})
