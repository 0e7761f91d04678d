"""Build step only (the project is described in pyproject.toml): the wheel carries the
top-level templates/ and migrations/ inside the package, as idp/bundled/."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithBundledResources(build_py):
    def run(self):
        super().run()
        for name in ("templates", "migrations"):
            target = Path(self.build_lib) / "idp" / "bundled" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(HERE / name, target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildWithBundledResources})
