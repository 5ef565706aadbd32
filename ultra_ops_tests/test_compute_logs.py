"""The CLI's instance captures step output where Dagster's default does, without helper processes.

These pin the Dagster internals ultra_ops/defs/shared/compute_logs.py builds on: they fail when
LocalComputeLogManager's paths, its config class loading or Dagster's use of capture_logs move.
Captures run in a child process, whose standard streams are file descriptors 1 and 2 as at a
terminal (pytest's own capture would stand in for them here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from dagster import DagsterInstance
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

from ultra_ops.defs.shared.compute_logs import InProcessComputeLogManager
from ultra_ops.defs.shared.launch import local_instance_yaml

_CHILD = textwrap.dedent('''
    import json, subprocess, sys
    import dagster._core.execution.compute_logs as dagster_capture
    from dagster import DagsterEventType, DagsterInstance, execute_job, in_process_executor, job, op, reconstructable

    def no_tail(*args, **kwargs):  # Dagster's capture would start `tail` and a watcher interpreter
        raise AssertionError("Dagster's tail-based capture was used")

    dagster_capture.execute_posix_tail = no_tail

    @op
    def shout() -> None:
        print("from the op", flush=True)
        subprocess.run(["sh", "-c", "echo from a child >&2"], check=True)

    @job(executor_def=in_process_executor)
    def shouting_job() -> None:
        shout()

    home, mode = sys.argv[1:]
    with DagsterInstance.from_config(home) as instance:
        manager = instance.compute_log_manager
        if mode == "capture":
            key = ["run-id", "compute_logs", "abcdefgh"]
            with manager.capture_logs(key):
                print("python out", flush=True)
                print("python err", file=sys.stderr, flush=True)
                subprocess.run(["sh", "-c", "echo child out; echo child err >&2"], check=True)
            print("after the capture", flush=True)
            complete = manager.is_capture_complete(key)
        else:
            result = execute_job(reconstructable(shouting_job), instance=instance)
            assert result.success
            [event] = instance.all_logs(result.run_id, of_type=DagsterEventType.LOGS_CAPTURED)
            key = manager.build_log_key_for_run(result.run_id, event.dagster_event.logs_captured_data.file_key)
            complete = manager.is_capture_complete(key)
        data = manager.get_log_data(key)  # what the UI's stdout/stderr tabs read
        print(json.dumps({"stdout": data.stdout.decode(), "stderr": data.stderr.decode(), "complete": complete}),
              file=open(home + "/result.json", "w"))
''')


def _run_child(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(local_instance_yaml(home))
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.run([sys.executable, str(script), str(home), mode], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads((home / "result.json").read_text())


def test_instance_keeps_logs_where_dagsters_default_does(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(local_instance_yaml(home))
    with DagsterInstance.from_config(str(home)) as instance:
        manager = instance.compute_log_manager
        assert isinstance(manager, InProcessComputeLogManager) and isinstance(manager, LocalComputeLogManager)
        default = LocalComputeLogManager(str(home / "storage"))  # Dagster's default for this home
        key = ["run-id", "compute_logs", "abcdefgh"]
        assert manager.get_captured_local_path(key, "out") == default.get_captured_local_path(key, "out")


def test_capture_stores_and_mirrors_python_and_subprocess_output(tmp_path: Path) -> None:
    proc, logs = _run_child(tmp_path, "capture")
    assert proc.stdout == "python out\nchild out\nafter the capture\n"
    assert proc.stderr == "python err\nchild err\n"
    assert logs == {"stdout": "python out\nchild out\n", "stderr": "python err\nchild err\n", "complete": True}


def test_a_run_captures_through_it(tmp_path: Path) -> None:
    proc, logs = _run_child(tmp_path, "run")
    assert logs["complete"]
    assert logs["stdout"] == "from the op\n"
    assert "from a child\n" in logs["stderr"]  # with Dagster's console log lines of the step
    assert "from the op\n" in proc.stdout and "from a child\n" in proc.stderr
