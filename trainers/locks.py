"""One writer per folder: `zoo-train` locks its run folder (`OUT/.lock`) and `zoo-export` its
target (`TO/.NAME.lock`) so that a second process on the same folder is refused instead of
interleaving epochs or deleting the first one's partial export.

The lock is an exclusive `fcntl.flock` on the lock file, which holds the owner's pid (for the
message). The kernel releases a flock when its process dies, even by `kill -9`, so a lock file
left by a dead process is taken over without any pid check. Standard library only: a test
holds a lock from a subprocess without importing TensorFlow.
"""
import contextlib
import fcntl
import os


class FolderLockedError(RuntimeError):
    """Another live process holds the lock; the message names its pid."""


def _holder(path):
    try:
        with open(path) as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def folder_lock(path, what):
    """Hold the lock file `path` for the duration of the `with` block; `what` names the
    folder in the refusal message ("run folder runs/simclr")."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderLockedError(
                f"{what} is in use by another process (pid {_holder(path)}, lock file {path}); wait for it "
                "to finish or stop it, or choose another folder.") from None
        try:  # the holder we waited on may have removed the file: lock the file now at `path`
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # before the unlock, so nobody locks a file that is about to vanish
        os.close(fd)
