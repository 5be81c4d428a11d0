"""Fill ``.whl/`` with the pure-Python wheels the lent GPU machine's python lacks (`make gpu-wheels`).

Which: pyproject.toml's runtime dependencies and what they need in turn (read from this environment's installed
metadata, markers evaluated for the machine's Python 3.12 on x86-64 Linux), less the packages the machine already
has (``MACHINE_HAS``). Which version: the one installed here, which pyproject's ranges admit and the test suite ran
with. Each is fetched with ``pip download --no-deps`` for CPython 3.12 / manylinux x86-64; the folder is then
checked: one wheel per package, each pure Python (``py3-none-any``), all together under ``--max-mib``.
``benchmarks/gpu_run.sh`` installs them there (``pip install --no-index --no-deps --target /tmp/site``).

    python benchmarks/gpu_wheels.py                # .whl/
    python benchmarks/gpu_wheels.py --list         # what it would fetch, and why, without fetching
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]

#: Python packages on the lent H200 machine's python (the device tool's KINDS.md, "Python packages already
#: there", image 'cuda' read on 2026-11-17): torch 2.11, pytorch-lightning 2.6.6, numpy 2.5 and the rest
MACHINE_HAS = frozenset(
    canonicalize_name(n)
    for n in """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
    certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
    cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
    flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
    huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
    llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
    multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
    nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
    nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
    nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax
    opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
    portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
    pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
    python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
    scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson
    six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
    tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision
    tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug
    wheel wrapt xarray xxhash yarl zipp""".split()
)
#: dependencies not carried, with the reason
NOT_CARRIED = {
    "argparse": "part of Python's standard library; unittest2 (batchgenerators') asks for the PyPI backport, which "
    "installed first on PYTHONPATH would shadow the standard library's",
    "wandb": "wandb 0.31.0 is a 20 MB platform wheel (a Go binary) that needs pydantic (with the platform wheel "
    "pydantic-core) and OpenTelemetry packages the machine lacks; the GPU run's `amos-zoo fit` logs to CSV without it",
}
#: the machine's interpreter, for dependency markers and for pip's wheel tags
TARGET_ENV = {
    **default_environment(),
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def project_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[Requirement]:
    """pyproject's runtime dependencies."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the dependencies list read as text
        block = pyproject.read_text().split("dependencies = [", 1)[1].split("]", 1)[0]
        deps = re.findall(r'"([^"]+)"', block)
    else:
        with open(pyproject, "rb") as f:
            deps = tomllib.load(f)["project"]["dependencies"]
    return [Requirement(d) for d in deps]


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**TARGET_ENV, "extra": e}) for e in (extras or {""}))


def wanted() -> dict[str, tuple[str, str]]:
    """``{name: (version, why)}`` of every package to carry: the dependency closure the machine lacks."""
    out: dict[str, tuple[str, str]] = {}
    todo = [(r, "pyproject.toml") for r in project_requirements()]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, why = todo.pop(0)
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen or name in MACHINE_HAS or name in NOT_CARRIED:
            continue
        seen.add(key)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError as err:
            raise SystemExit(
                f"{req.name} (needed by {why}) is not installed here: run this in the project's environment "
                "(make gpu-wheels does), where pyproject's dependencies are installed"
            ) from err
        if version not in req.specifier:
            raise SystemExit(f"{req.name} {version} installed here does not satisfy {req} (needed by {why})")
        out.setdefault(name, (version, why))
        for sub in metadata.requires(req.name) or []:
            sub_req = Requirement(sub)
            if _applies(sub_req, set(req.extras)):
                todo.append((sub_req, f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}"))
    return out


def _wheel_name(path: Path) -> str:
    return canonicalize_name(path.name.split("-", 1)[0])


def download(packages: dict[str, tuple[str, str]], dest: Path) -> list[Path]:
    """``pip download --no-deps`` of each package at its version for CPython 3.12 on x86-64 Linux, into ``dest``;
    wheels of other packages or versions already there are removed (two versions would stop the install)."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    command += ["--python-version", "3.12", "--implementation", "cp"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    command += [f"{name}=={version}" for name, (version, _) in sorted(packages.items())]
    subprocess.run(command, check=True)
    keep = []
    for wheel in sorted(dest.glob("*.whl")):
        name = _wheel_name(wheel)
        version = wheel.name.split("-")[1]
        if packages.get(name, (None,))[0] == version:
            keep.append(wheel)
        else:
            wheel.unlink()
    return keep


def check(wheels: list[Path], packages: dict[str, tuple[str, str]], max_mib: float) -> list[str]:
    """Problems of the wheel folder: a package missing or twice, a wheel that is not pure Python, too many MiB."""
    problems = []
    names = [_wheel_name(w) for w in wheels]
    for name in packages:
        if names.count(name) != 1:
            problems.append(f"{name}: {names.count(name)} wheels (one expected)")
    for wheel in wheels:
        if not wheel.name.endswith("-none-any.whl"):
            problems.append(f"{wheel.name}: not a pure-Python wheel")
    total = sum(w.stat().st_size for w in wheels) / 2**20
    if total > max_mib:
        problems.append(f"{total:.1f} MiB of wheels, more than {max_mib} MiB")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=str(REPO / ".whl"))
    parser.add_argument(
        "--max-mib", type=float, default=32.0, help="limit for the wheels (the whole tree that travels: 64 MiB)"
    )
    parser.add_argument("--list", action="store_true", help="print what would be fetched, fetch nothing")
    args = parser.parse_args(argv)
    packages = wanted()
    for name, (version, why) in sorted(packages.items()):
        print(f"{name}=={version}  (needed by {why})")
    for name, reason in NOT_CARRIED.items():
        print(f"not carried: {name}: {reason}")
    if args.list:
        return 0
    wheels = download(packages, Path(args.dest))
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{sum(w.stat().st_size for w in wheels) / 2**20:7.2f} MiB in {args.dest}")
    problems = check(wheels, packages, args.max_mib)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
