"""tests/forked.py's `run_script` behaves as `subprocess.run([sys.executable, script, ...])` where the tests rely on
it: exit status (code, exception, signal), output written at every level, environment, working folder, session,
exit handlers and `__main__`; compared with a real subprocess on the same script."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from forked import run_script

SCRIPT = textwrap.dedent(
    """
    import atexit, os, signal, sys
    atexit.register(lambda: print("atexit ran", flush=True))
    print("stdout", os.environ.get("FORKED_PROBE"), os.getcwd(), os.getpgid(0) == os.getpid(), flush=True)
    print("stderr", file=sys.stderr, flush=True)
    os.write(2, b"fd 2\\n")
    if __name__ == "__main__":
        how = sys.argv[1]
        if how == "exit":
            sys.exit(3)
        if how == "raise":
            raise ValueError("from the script")
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "interrupt":
            raise KeyboardInterrupt
        if how == "child":  # a child that outlives the script and writes last (as a DDP rank may)
            import subprocess
            late = "import time; time.sleep(1); open('late.txt', 'w').write('x'); print('child wrote', flush=True)"
            subprocess.Popen([sys.executable, "-c", late])
    """
)


def _real(script, args, env, cwd, new_session):
    done = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        cwd=cwd,
        start_new_session=new_session,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return done.returncode, done.stdout


def test_run_script_matches_a_real_subprocess(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "FORKED_PROBE": "seen"}
    cases = (("exit", True), ("raise", False), ("kill", False), ("interrupt", False), ("child", False), ("end", False))
    for how, new_session in cases:
        forked = run_script(script, [how], env=env, cwd=tmp_path, new_session=new_session)
        code, output = _real(script, [how], env, tmp_path, new_session)
        assert forked.returncode == code, (how, forked.stdout)
        assert f"stdout seen {tmp_path} {new_session}" in forked.stdout and f"{new_session}" in output
        assert "stderr" in forked.stdout and "fd 2" in forked.stdout
        assert ("atexit ran" in forked.stdout) == ("atexit ran" in output), (how, forked.stdout, output)
        assert ("ValueError: from the script" in forked.stdout) == (how == "raise")
        if how == "child":  # the output is read until the child has closed it too, as subprocess.run reads it
            assert "child wrote" in forked.stdout and "child wrote" in output
            assert (tmp_path / "late.txt").is_file()
            (tmp_path / "late.txt").unlink()
    codes = [run_script(script, [h]).returncode for h in ("exit", "raise", "kill", "interrupt", "end")]
    assert codes == [3, 1, -9, -2, 0]
