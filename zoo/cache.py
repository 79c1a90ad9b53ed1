"""The zoo's on-disk caches: where they live and how a file gets there.

Every cache is a sub-folder of one root, $ZOO_CACHE_DIR (default ~/.cache/keras-ssl-zoo):
`data` (decoded image sets, zoo.data), `permutations` (jigsaw permutation sets, zoo.patches).
Files are written atomically, so a crash or a concurrent reader never sees half a file.
"""
import os
import tempfile

ENV_VAR = "ZOO_CACHE_DIR"


def cache_dir(name):
    """The folder of the `name` cache: $ZOO_CACHE_DIR/name, default ~/.cache/keras-ssl-zoo/name."""
    root = os.environ.get(ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "keras-ssl-zoo")
    return os.path.join(root, name)


def write_atomically(path, write, suffix=".tmp"):
    """Create `path` (and its folder) with `write(binary file)`: into a temporary file in the same
    folder, then renamed over `path` (os.replace), so readers see the old file or the whole new
    one. On any error the temporary file is removed and the error raised."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
