"""Build the Hugging Face hub cache layout that huggingface_hub itself writes, without a network:

    CACHE/models--ORG--REPO/blobs/<sha256>               file contents
    CACHE/models--ORG--REPO/snapshots/<commit>/<path>    relative symlinks to the blobs
    CACHE/models--ORG--REPO/refs/<revision>              the commit hash (no newline)
"""
import hashlib
import os
import shutil


def put_in_hf_cache(cache, repo_id, folder, revision="main", commit=None, skip=()):
    """Copy every file under `folder` (except paths starting with one of `skip`) into the cache
    as repo `repo_id` at `revision`; returns the commit hash used."""
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}:{sorted(os.listdir(folder))}".encode()).hexdigest()
    repo = os.path.join(str(cache), "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", commit)
    for dirpath, _, names in os.walk(folder):
        for name in names:
            src = os.path.join(dirpath, name)
            rel = os.path.relpath(src, folder)
            if any(rel.startswith(s) for s in skip):
                continue
            with open(src, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            blob = os.path.join(repo, "blobs", digest)
            os.makedirs(os.path.dirname(blob), exist_ok=True)
            shutil.copyfile(src, blob)
            link = os.path.join(snapshot, rel)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if os.path.lexists(link):  # the same commit under another ref
                os.remove(link)
            os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    ref = os.path.join(repo, "refs", revision)
    os.makedirs(os.path.dirname(ref), exist_ok=True)
    with open(ref, "w") as f:
        f.write(commit)
    return commit
