"""`zoo-train --workers N`: run N workers of a MultiWorkerMirroredStrategy run as processes on
this machine (TF_CONFIG on free 127.0.0.1 ports), forwarding SIGTERM / Ctrl-C to all of them."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _stop_with_parent():
    """In a worker process: receive SIGTERM (checkpoint, then stop) when the launcher dies."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def launch_local_workers(argv, workers, grace_seconds=10):
    """Run `zoo-train argv` (which must include --strategy multiworker) as `workers` worker
    processes on this machine, with TF_CONFIG pointing them at each other on free 127.0.0.1
    ports; returns the exit status. Worker 0 (the chief) prints here and writes the run
    folder; the others print into log files. SIGTERM / Ctrl-C go to every worker, which stop
    together after the same step with a checkpoint (exit status 143). If a worker dies, the
    others cannot go on (their collectives wait for it): they are killed after
    `grace_seconds`, and rerunning the same command resumes from the last checkpoint."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(workers)]}
    logdir = tempfile.mkdtemp(prefix="zoo-workers-")
    procs, logs = [], []
    for i in range(workers):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        path = os.path.join(logdir, f"worker-{i}.log") if i else None
        output = open(path, "w") if path else None
        procs.append(subprocess.Popen([sys.executable, "-m", "trainers.train", *argv], env=env, stdout=output,
                                      stderr=subprocess.STDOUT if output else None, start_new_session=True,
                                      preexec_fn=_stop_with_parent))
        logs.append(path)
        print(f"worker {i}: pid {procs[-1].pid}, {cluster['worker'][i]}, "
              + (f"output in {path}" if path else "the chief (output below)"), flush=True)

    stopping = []

    def forward(signum, frame):
        stopping.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed_at = None
    try:
        while any(proc.poll() is None for proc in procs):
            if not stopping and any(proc.poll() not in (None, 0) for proc in procs):
                failed_at = failed_at or time.time()
                if time.time() - failed_at > grace_seconds:
                    for proc in procs:
                        if proc.poll() is None:
                            proc.kill()
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [proc.wait() for proc in procs]
    if set(codes) <= {0, 143} and (stopping or not any(codes)):  # done, or stopped with a checkpoint
        shutil.rmtree(logdir, ignore_errors=True)
        return 143 if any(codes) else 0
    for i, code in enumerate(codes):
        if code:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            print(f"worker {i} {how}" + (f"; its output: {logs[i]}" if logs[i] else ""), file=sys.stderr)
            if logs[i] and code > 0:
                with open(logs[i]) as f:
                    print("".join(f.readlines()[-15:]), file=sys.stderr)
    print("error: the multi-worker run failed. Rerun the same command to resume from its last checkpoint.",
          file=sys.stderr)
    return 1


def _without_option(argv, name):
    """argv without `name VALUE` / `name=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out
