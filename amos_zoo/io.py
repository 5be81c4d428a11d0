"""File helpers shared by every layer: atomic writes and NIfTI I/O with geometry kept.

Every output amos-zoo writes goes through :func:`atomic_path` (temp file + rename), so an
interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["atomic_path", "write_json", "write_text", "read_json_object", "save_nifti", "load_nifti"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``) so libraries that pick a format from
    the name write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets what any other file gets
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    """Write JSON (indented) atomically."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json_object(path: str | Path, error: type[Exception] = ValueError) -> dict:
    """A JSON file holding an object; ``error`` naming the file and the problem when it does not."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from err
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object at the top level")
    return data


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path, header: nib.Nifti1Header | None = None) -> Path:
    """Save an array as NIfTI atomically, with qform and sform both set to ``affine``.

    Args:
        array: voxel data in the file's voxel order.
        affine: 4x4 voxel-to-world (RAS) matrix.
        path: destination (``.nii`` or ``.nii.gz``).
        header: optional header to copy (e.g. the input scan's); its data type is replaced by the array's.
    """
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64), header=header)
    img.set_data_dtype(array.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI file as (array, affine); a clear error naming the file when it cannot be read."""
    try:
        img = nib.load(str(path))
        return np.asanyarray(img.dataobj), img.affine
    except Exception as err:  # nibabel raises several types for truncated or corrupt files
        raise OSError(f"{path}: cannot read NIfTI ({type(err).__name__}: {err}); re-export or re-download it") from err


def numpy_safe_globals() -> list:
    """numpy objects that may be unpickled by ``torch.load(weights_only=True)``: arrays, dtypes and scalars (such
    as research-contributions' ``best_acc``), the scalar also under numpy 1's module name."""
    from numpy._core.multiarray import _reconstruct, scalar

    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [np.ndarray, np.dtype, _reconstruct, scalar, (scalar, "numpy.core.multiarray.scalar"), *dtypes]
