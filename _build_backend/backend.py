"""setuptools' build backend, asking for mypyc's build requirements only when the compiled build is wanted.

A pure-Python install (the default) needs nothing but setuptools; ``MCSCHED_COMPILE=1`` (see
setup.py) also needs mypy, which holds mypyc, and what mypy's type check of the core imports.
Build requirements that depend on the build are what PEP 517's ``get_requires_for_build_*``
hooks are for; this is setuptools' documented way to add some ("Dynamic build dependencies",
setuptools' build_meta guide), the equivalent of black's opt-in ``hatch-mypyc`` build hook.
"""

from __future__ import annotations

import os

from setuptools import build_meta as _orig
from setuptools.build_meta import *  # noqa: F403  (every other hook is setuptools' own)

#: What ``MCSCHED_COMPILE=1`` adds to the build environment: mypyc, and the packages its type
#: check reads ([tool.mypy]'s pydantic plugin; the core's imports of modules that import yaml).
COMPILE_REQUIRES = ["mypy==2.4.1", "pydantic>=2.7", "types-PyYAML"]


def _compile_requires() -> list[str]:
    return COMPILE_REQUIRES if os.environ.get("MCSCHED_COMPILE", "") == "1" else []


def get_requires_for_build_wheel(config_settings: dict[str, str | list[str]] | None = None) -> list[str]:
    return [*_orig.get_requires_for_build_wheel(config_settings), *_compile_requires()]


def get_requires_for_build_editable(config_settings: dict[str, str | list[str]] | None = None) -> list[str]:
    return [*_orig.get_requires_for_build_editable(config_settings), *_compile_requires()]
