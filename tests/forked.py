"""Run a test's Python script in a process of its own without paying the imports again: a multiprocessing fork
server (one per xdist worker, started on first use) imports torch, Lightning, MONAI and amos-zoo's training modules
once, and forks a process per script. The script runs as ``__main__`` with its own argv, environment, exit status,
signals and process group, its stdout and stderr captured, as under ``subprocess.run``; what it cannot see is
that its imports were already done (tests of import-time behaviour and the README's commands keep real subprocesses).
Under Lightning's DDP the forked process is rank 0 and Lightning starts the other ranks as it always does, as new
interpreters running the same script (``sys.argv``).

Starting torch + Lightning + MONAI costs about 4.5 s of CPU per process on the suite's machines; the scripts that
only need a process of their own (signals, SIGKILL, pre-emption, nnU-Net's planners, rank 0 of a DDP run) take it once
per worker here instead of once each.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: what the fork server imports once (the scripts' own imports are then found in sys.modules)
PRELOAD = [
    "torch",
    "pytorch_lightning",
    "monai",
    "amos_zoo.data.datamodule",
    "amos_zoo.train.module",
    "amos_zoo.train.callbacks",
    "amos_zoo.cli.main",
    "amos_zoo.cli.commands",
    "amos_zoo.experiments.reproduce",
    "amos_zoo.infer.pipeline",
]

_CONTEXT: multiprocessing.context.ForkServerContext | None = None


def _context() -> multiprocessing.context.ForkServerContext:
    """The fork server's context, the server started on first use. Its own temporary folder (multiprocessing's
    ``pymp-*``, removed as it exits, after the xdist worker has gone) is made in the system's temporary folder, not
    in the worker's scratch folder that tests/conftest.py removes before either has exited."""
    global _CONTEXT
    if _CONTEXT is None:
        from multiprocessing import forkserver

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        scratch, cached = os.environ.get("TMPDIR"), tempfile.tempdir
        os.environ["TMPDIR"] = tempfile.tempdir = os.environ.get("AMOS_ZOO_TESTS_SYSTEM_TMPDIR", tempfile.gettempdir())
        try:
            forkserver.ensure_running()  # also makes this process's own pymp-* folder (its socket's), there
        finally:
            tempfile.tempdir = cached
            if scratch is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = scratch
        _CONTEXT = context
    return _CONTEXT


def run_script(
    script: str | Path,
    args: list[str],
    env: dict[str, str] | None = None,
    new_session: bool = False,
    timeout: float = 600,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env,
    start_new_session=new_session, timeout=timeout, cwd=cwd)``, in a process forked from the fork server: the returned
    ``returncode`` is the script's exit status (negative: the signal that ended it) and ``stdout`` holds its stdout
    and stderr in the order written (``stderr`` is empty). As ``subprocess.run`` does, it reads the output until every
    process holding it has closed it (the script's own children too, such as DDP ranks), then waits for the script."""
    command = [sys.executable, str(script), *args]
    env = dict(os.environ if env is None else env)
    if cwd is not None and not Path(cwd).is_dir():
        raise FileNotFoundError(f"no such folder: {cwd}")
    reader, writer = multiprocessing.Pipe(duplex=False)  # the child's fds 1 and 2
    process = _context().Process(target=run_as_main, args=(str(script), list(args), env, writer, new_session, cwd))
    process.start()
    writer.close()
    deadline, chunks = time.monotonic() + timeout, []
    with reader:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([reader.fileno()], [], [], left)[0]:
                if new_session:  # as subprocess.run does on a timeout: kill it (its group, when it has its own)
                    os.killpg(process.pid, signal.SIGKILL)
                process.kill()
                process.join()
                raise subprocess.TimeoutExpired(command, timeout, b"".join(chunks).decode(errors="replace"))
            chunk = os.read(reader.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    process.join()
    return subprocess.CompletedProcess(command, process.exitcode, b"".join(chunks).decode(errors="replace"), "")


def run_as_main(
    script: str, args: list[str], env: dict[str, str], output, new_session: bool, cwd: str | Path | None = None
) -> None:
    """The forked process: stdout and stderr to ``output`` (a pipe's writing end), its own session (when asked),
    folder, environment, argv and ``sys.path[0]``, the script run as ``__main__``; exit handlers run as at a normal
    interpreter exit, and a KeyboardInterrupt ends it by SIGINT, as an interpreter does."""
    import atexit
    import io
    import runpy
    import traceback

    os.dup2(output.fileno(), 1)
    os.dup2(output.fileno(), 2)
    output.close()
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, write_through=True)
    if new_session:
        os.setsid()
    if cwd is not None:
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # from TMPDIR again, as in a new interpreter
    if "OMP_NUM_THREADS" in env:  # read by torch when it started, in the fork server
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    # a fresh interpreter's default start method (multiprocessing made this process with the fork server's and set
    # it as the default: the script's own pools would then start a fork server that runs the script again)
    multiprocessing.set_start_method(None, force=True)
    interrupted = False
    try:
        runpy.run_path(script, run_name="__main__")
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends its processes with os._exit, which skips them
        sys.stdout.flush()
        sys.stderr.flush()
    if interrupted:  # an interpreter ends by the signal itself
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
