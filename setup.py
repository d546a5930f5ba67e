"""Build hook: compile the scheduler's hot path to C with mypyc.

Everything else about the package lives in ``pyproject.toml``. The modules listed in
``tidal._build.COMPILED`` are plain, strictly typed Python; mypyc (part of mypy) turns
each into a C extension that Python imports in place of the ``.py`` file: 2.5x as fast
on a 100k-device round and 3.6x on a philly.csv simulation, as measured on the 2-core
development VM (see docs/architecture.md, "Compiled hot path"). Set
``TIDAL_COMPILE=0`` to install pure Python: decisions are identical either way.
``TIDAL_COMPILE=1`` (what ``make`` sets) makes a failed compile an error; unset, it
falls back to pure Python with a warning.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# One list of compiled modules, in the package (tidal._build reads it at run time too).
MODULES = runpy.run_path(str(ROOT / "src" / "tidal" / "_build.py"))["COMPILED"]
COMPILED = ["src/" + m.replace(".", "/") + ".py" for m in MODULES]


# Commands that build the package; pip also runs this file to read metadata (egg_info,
# dist_info), where compiling would only repeat mypy's minute of type checking.
BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


# TIDAL_COMPILE: "0" installs pure Python; "1" (what `make` sets) compiles or fails;
# unset, a failed compile (no C compiler, no Python headers) installs pure Python with a
# warning, so a plain `pip install` works everywhere.
MODE = os.environ.get("TIDAL_COMPILE", "")


class BuildOrFallBack(build_ext):
    """Build every extension, or (unless compiling was required) none of them: the
    compiled modules share one runtime library, so a partial build would not import."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler errors come in many types
            if MODE == "1":
                raise
            for path in self.get_outputs():
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []
            print(
                f"WARNING: compiling Tidal's hot path failed ({exc}); installing pure Python "
                "(same decisions, a quarter to a half of the speed). Install a C compiler and the Python "
                "headers, or set TIDAL_COMPILE=0 to skip compiling.",
                file=sys.stderr,
            )


def ext_modules() -> list[object]:
    if MODE == "0" or not BUILDS & set(sys.argv[1:]):
        return []
    from mypyc.build import mypycify

    # The build environment has mypy but not Tidal's dependencies (numpy, torch): modules
    # the compiled ones import are read for their types only, silently, and what is
    # missing is taken as Any (the compiled modules themselves never import torch).
    options = ["--follow-imports=silent", "--ignore-missing-imports"]
    opt_level = os.environ.get("MYPYC_OPT_LEVEL", "3")
    return list(mypycify(options + COMPILED, opt_level=opt_level))


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildOrFallBack})
