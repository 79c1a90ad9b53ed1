"""How the command-line tools report a user's mistake: one `error: ...` line on stderr and exit
status 2 (as argparse does), not a traceback. Set ZOO_DEBUG=1 to get the traceback instead.
Anything else (a bug) still ends with its traceback."""
import contextlib
import os
import sys

import yaml

from trainers.locks import FolderLockedError

# Errors that describe the input or the environment: bad values, missing or existing files,
# malformed YAML, a folder another process is writing.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
               IsADirectoryError, yaml.YAMLError, FolderLockedError)


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
    exit status 2."""
    try:
        yield
    except (*USER_ERRORS, *extra) as e:
        if os.environ.get("ZOO_DEBUG"):
            raise
        fail(e)
