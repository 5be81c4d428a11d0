"""The package as a user installs it: the wheel built from the checkout, in a fresh virtual environment whose only
other packages are the ones the wheel declares (``Requires-Dist``, transitively). Every module imports there and
the configs and protocol cards come from the package, not the source tree. The README's commands then run with this
environment's ``amos-zoo`` (tests/test_readme.py), so the end-to-end paths run once, installed as users have them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, declared_closure, link_distributions

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import amos_zoo
names = [m.name for m in pkgutil.walk_packages(amos_zoo.__path__, "amos_zoo.")]
for name in names:
    importlib.import_module(name)
print(amos_zoo.__file__, len(names))
"""


@pytest.mark.slow
def test_wheel_imports_every_module_with_only_its_declared_dependencies(wheel_env, tmp_path):
    done = subprocess.run(
        [wheel_env.python, "-c", IMPORT_EVERY_MODULE], cwd=tmp_path, env=wheel_env.env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    where, count = done.stdout.split()
    assert where.startswith(str(wheel_env.purelib)) and int(count) > 40  # the wheel's copy, not the checkout
    # the environment is not the test environment: a package the wheel does not declare is absent
    absent = subprocess.run(
        [wheel_env.python, "-c", "import pytest"], env=wheel_env.env, capture_output=True, text=True
    )
    assert "No module named 'pytest'" in absent.stderr
    # the package data a user's commands read: configs and protocol cards
    out = subprocess.run(
        [wheel_env.console, "configs"], cwd=tmp_path, env=wheel_env.env, capture_output=True, text=True, check=True
    )
    assert "base/gpu.yaml" in out.stdout and "msd/Task09_Spleen.yaml" in out.stdout
    out = subprocess.run(
        [wheel_env.console, "protocol", "show", "nnunet-v2"],
        cwd=tmp_path,
        env=wheel_env.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nnunet-v2" in out.stdout


@pytest.mark.slow
def test_a_dependency_missing_from_the_metadata_fails_the_import(wheel_env, tmp_path):
    """The check can fail: the same environment without nibabel (as if pyproject.toml forgot it) cannot import the
    package's I/O."""
    requires = [r for r in wheel_env.requires if not r.startswith("nibabel")]
    assert len(requires) == len(wheel_env.requires) - 1
    reduced = tmp_path / "deps"
    link_distributions(declared_closure(requires).values(), reduced)
    code = f"import sys; sys.path[:0] = [{str(wheel_env.purelib)!r}, {str(reduced)!r}]; import amos_zoo.io"
    done = subprocess.run(
        [wheel_env.python, "-S", "-c", code], cwd=tmp_path, env=wheel_env.env, capture_output=True, text=True
    )
    assert done.returncode != 0 and "No module named 'nibabel'" in done.stderr, done.stderr[-2000:]


def test_the_declared_closure_is_what_pyproject_lists():
    """The closure starts from the wheel's metadata, which is pyproject.toml's dependency list."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX string: setuptools warns about the old table form
    declared = project["dependencies"]
    closure = declared_closure(declared)
    assert {"torch", "monai", "nibabel", "pytorch-lightning", "numpy"} <= set(closure)
    assert "pytest" not in closure and "nnunetv2" not in closure  # test extras are not runtime dependencies
    assert sys.version_info >= (3, 10)
