"""An operation that holds an environment's lock, driven line by line: what a deploy does with the
lock (EnvironmentLock, as EnvironmentLocks.hold takes it) without the deploy around it, so a test
can start the same contender on two machines and say when each takes, checks and lets go.

    python -m ultra_ops_tests.support.lock_client CONFIG ENVIRONMENT

prints `ready <pid>`, then answers each line of stdin:
    take RUN WAIT_S AT -> at time AT (time.time(); a start line for a race), tries the lock:
                          `won RUN <time>` or `refused <message>` (or `error <message>`)
    release            -> `released <time>`
    watch              -> when the held lock is lost: `lost <time> <reason>`, then what a step's
                          check says, `stopped <message>`
Times are time.time(): the machines of the tests share this machine's clock.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

from ultra_ops.engine.errors import LockHeldError, OperationError
from ultra_ops.engine.locks import EnvironmentLock
from ultra_ops.engine.settings import load_settings


def say(line: str) -> None:
    print(line, flush=True)


def main(config: str, environment: str) -> int:
    env = load_settings(config).environment(environment)
    lock: EnvironmentLock | None = None
    say(f"ready {os.getpid()}")
    for line in sys.stdin:
        command, *args = line.split()
        if command == "take":
            run_id, wait_s, at = args[0], float(args[1]), float(args[2])
            time.sleep(max(0.0, at - time.time()))
            candidate = EnvironmentLock(env, operation="deploy", run_id=run_id)
            try:
                lock = candidate.acquire(wait_s=wait_s)
                say(f"won {run_id} {time.time()}")
            except LockHeldError as exc:
                say(f"refused {exc}")
            except OperationError as exc:
                say(f"error {exc}")
        elif command == "release" and lock is not None:
            lock.release()
            lock = None
            say(f"released {time.time()}")
        elif command == "watch" and lock is not None:
            while lock.lost is None:
                time.sleep(0.02)
            say(f"lost {time.time()} {lock.lost}")
            try:
                lock.check()
                say("stopped never: the check passed")
            except OperationError as exc:
                say(f"stopped {exc}")
    return 0


class Contender:
    """The test's end of a lock client (started on either machine): lines in, answers out, each
    answer awaited with a bound."""

    def __init__(self, proc: subprocess.Popen[str], machine: str) -> None:
        self.proc = proc
        self.machine = machine
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump, args=(proc.stdout, self._answers.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(proc.stderr, self._stderr.append), daemon=True).start()
        ready = self.answer(60)
        assert ready.startswith("ready "), ready
        self.pid = int(ready.split()[1])

    @staticmethod
    def _pump(stream, put) -> None:  # noqa: ANN001
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = 60) -> str:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from the lock client on {self.machine} within {timeout:g} s") from None
        if line is None:
            raise AssertionError(f"the lock client on {self.machine} ended: {' | '.join(self._stderr[-5:])}")
        return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
