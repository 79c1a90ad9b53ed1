"""How the command-line tools report a user's mistake: one `error: ...` line on stderr and exit
status 2 (as argparse does), not a traceback. A full disk is one `error: ...` line too, naming
the folder and the space left, with exit status 1. Set ZOO_DEBUG=1 to get the traceback
instead. Anything else (a bug) still ends with its traceback."""
import contextlib
import errno
import os
import shutil
import sys

import yaml

from trainers.locks import FolderLockedError

# Errors that describe the input or the environment: bad values, missing or existing files,
# malformed YAML, a folder another process is writing.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
               IsADirectoryError, yaml.YAMLError, FolderLockedError)


# A write failed for want of space: the disk is full (ENOSPC) or the user's quota is (EDQUOT).
# h5py (Keras's .weights.h5 files) reports the C library's error only in its message text.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), "errno = 28")


class DiskFullError(RuntimeError):
    """A write failed because the disk is full; the message names the folder, the space left
    and what was kept."""


def is_disk_full(error):
    """Whether `error`, or an exception it was raised from, is a full disk."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and (error.errno in DISK_FULL_ERRNOS
                                           or any(text in str(error) for text in DISK_FULL_TEXTS)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _size(n):
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def free_space(folder):
    """"12.3 MB free of 100.0 GB": the space left on the file system of `folder` (or of its
    nearest existing parent)."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return "free space unknown"
    return f"{_size(usage.free)} free of {_size(usage.total)}"


def disk_full_message(error):
    """The one-line message of a disk-full OSError raised while writing some file."""
    filename = getattr(error, "filename", None)
    folder = os.path.dirname(os.path.abspath(filename)) if filename else os.getcwd()
    return (f"the disk of {folder} is full ({free_space(folder)}): writing {filename or 'a file'} failed. "
            "Free some space there (or choose a folder on another disk) and run the command again.")


class CommandError(SystemExit):
    """Exits with `status` (its `code`); str() is the message, so a caller of main() can read it."""

    def __init__(self, message, status=2):
        super().__init__(status)
        self.message = message

    def __str__(self):
        return self.message


def fail(message, status=2):
    """Print `error: message` on stderr and exit with `status`."""
    message = str(message)
    message = message if message.startswith("error:") else f"error: {message}"
    print(message, file=sys.stderr)
    raise CommandError(message, status)


@contextlib.contextmanager
def user_errors(*extra):
    """In a CLI's main: USER_ERRORS (and `extra` exception types) become one `error:` line and
    exit status 2; a full disk (DiskFullError, or an OSError that says so) one `error:` line and
    exit status 1."""
    try:
        yield
    except (*USER_ERRORS, *extra) as e:
        if os.environ.get("ZOO_DEBUG"):
            raise
        fail(e)
    except (DiskFullError, OSError) as e:
        if os.environ.get("ZOO_DEBUG") or not (isinstance(e, DiskFullError) or is_disk_full(e)):
            raise
        fail(e if isinstance(e, DiskFullError) else disk_full_message(e), status=1)
