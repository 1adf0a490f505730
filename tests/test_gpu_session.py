"""benchmarks/gpu_session.py's step runner: a step stopped at its limit takes its whole
process group with it (a launcher's agents must not train on into the next step), and the
part's summary is written after every step."""

from __future__ import annotations

import importlib.util
import os
import sys
import time

from conftest import ROOT

spec = importlib.util.spec_from_file_location("gpu_session", ROOT / "benchmarks" / "gpu_session.py")
gpu_session = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_session)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped by its parent) counts as ended
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_a_step_at_its_limit_ends_with_its_children(tmp_path):
    script = tmp_path / "step.py"
    pid_file = tmp_path / "grandchild.pid"
    script.write_text(
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n")
    started = time.perf_counter()
    line = gpu_session.run("step", 2, [str(script)], tmp_path)
    assert "stopped at its 2 s limit" in line
    assert time.perf_counter() - started < 20
    assert "started" in (tmp_path / "step.txt").read_text()
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_the_part_summary_is_written_after_each_step(tmp_path, monkeypatch):
    ok, slow = tmp_path / "ok.py", tmp_path / "slow.py"
    ok.write_text("print('fine')\n")
    slow.write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setitem(gpu_session.PARTS, "9", [("ok", 30, [str(ok)], [str(ok)]),
                                                 ("slow", 30, [str(slow)], [str(slow)]),
                                                 ("late", 30, [str(ok)], [str(ok)])])
    monkeypatch.setattr(sys, "argv", ["gpu_session.py", "--part", "9", "--out", str(tmp_path),
                                      "--budget", "4"])
    monkeypatch.setattr(gpu_session, "MIN_STEP_S", 1.0)
    monkeypatch.setattr(gpu_session.signal, "signal", lambda *args: None)  # pytest keeps its own
    gpu_session.main()  # --part's choices are read from PARTS when main() runs
    lines = (tmp_path / "part9.txt").read_text().splitlines()
    assert lines[0].startswith("ok: exit 0")
    assert lines[1].startswith("slow: stopped at its")
    assert lines[2].startswith("late: skipped")
