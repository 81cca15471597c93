"""A disk cache of TrialSets keyed by the content of their source files and the parameters.

Readers turn recordings into TrialSets once; later runs load the saved copy memory-mapped.
The key is the SHA-256 of (cache format version, the content hashes of the source files in the
given order, the JSON-canonical parameters), so editing a source file, or changing any parameter,
builds a new entry. Entries are written to a temporary folder and renamed into place, so a crash
never leaves a half entry; an entry that fails its checks when read (missing or truncated file,
checksum mismatch, unreadable header) is rebuilt with a warning, never used.

Layout of ``directory``::

    file_hashes.json           memo of file hashes by (path, size, mtime_ns)
    <key>/entry.json           what the entry holds, its files' sizes and SHA-256
    <key>/sets/<i>/            TrialSet.save folders

Examples
--------
>>> cache = TrialSetCache()                                          # doctest: +SKIP
>>> ts = cache.get_or_build([edf_path], {"tmin": 0.5, "tmax": 2.5},  # doctest: +SKIP
...                         lambda: read_my_trials(edf_path))
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..utils import check_file, check_option, logger, warn
from .trialset import TrialSet

__all__ = ["TrialSetCache", "file_hash", "canonical_json", "default_cache_dir", "CACHE_VERSION"]

CACHE_VERSION = 1
"""Bumped when the entry layout changes; part of every key."""

_ENTRY = "entry.json"
_HASH_INDEX = "file_hashes.json"
_INDEX_MAX = 20000
_CHUNK = 1 << 20

Built = Union[TrialSet, dict[str, TrialSet]]


def default_cache_dir() -> Path:
    """``$BCIKIT_CACHE`` when set, ``~/.cache/bcikit`` otherwise."""
    env = os.environ.get("BCIKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bcikit"


# ---------------------------------------------------------------------------------------- hashing
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _HashIndex:
    """The JSON memo ``{resolved path: [size, mtime_ns, sha256]}``; read once, written once."""

    def __init__(self, path: Path | None):
        self.path = path
        self.data: dict[str, list] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self.data = loaded
            except (OSError, ValueError) as err:  # a damaged memo only costs re-hashing
                logger.debug("ignoring unreadable hash index %s: %s", path, err)

    def file(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        rec = self.data.get(key)
        if (isinstance(rec, list) and len(rec) == 3 and rec[0] == st.st_size
                and rec[1] == st.st_mtime_ns):
            return rec[2]
        digest = _sha256_file(path)
        self.data.pop(key, None)
        self.data[key] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True
        return digest

    def any(self, path: Path) -> str:
        if not path.is_dir():
            return self.file(path)
        h = hashlib.sha256(b"bcikit-dir\n")
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}\0{self.file(f)}\n".encode())
        return h.hexdigest()

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        while len(self.data) > _INDEX_MAX:
            self.data.pop(next(iter(self.data)))
        try:
            _atomic_write_text(self.path, json.dumps(self.data))
        except OSError as err:  # a read-only cache folder only costs re-hashing next time
            logger.debug("could not write hash index %s: %s", self.path, err)
        self.dirty = False


def file_hash(path: str | os.PathLike, *, index: str | os.PathLike | None = None) -> str:
    """SHA-256 (hex) of a file's content; for a folder, of its files' relative paths and hashes.

    Results are memoised by (resolved path, size, mtime_ns) in a small JSON index, so unchanged
    files are not read again.

    Parameters
    ----------
    path : path-like
        A file or a folder (e.g. a ``.mefd`` or ``.ds`` recording).
    index : path-like or None
        The memo file (default: ``file_hashes.json`` in :func:`default_cache_dir`).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    """
    p = check_file(path, what="source file")
    memo = _HashIndex(Path(index) if index is not None else default_cache_dir() / _HASH_INDEX)
    digest = memo.any(p)
    memo.save()
    return digest


def _canonical(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, (bool, str)):
            return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, os.PathLike):
        return Path(value).as_posix()
    if isinstance(value, np.ndarray):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value.tolist())]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"Cache params must have string keys; {where} has key {k!r}.")
            out[k] = _canonical(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (set, frozenset)):
        items = [_canonical(v, where) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, Sequence):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"Cache params must be JSON-like (dict, list, str, number, bool, None, path); "
                    f"{where} is a {type(value).__name__}.")


def canonical_json(params: Mapping[str, Any]) -> str:
    """One JSON text per meaning: sorted keys, no spaces, tuples as lists, 8.0 as 8, paths as
    POSIX strings, numpy scalars and arrays as Python values.

    Raises
    ------
    TypeError
        For a value JSON cannot hold, naming where it is in ``params``.
    """
    return json.dumps(_canonical(params, "params"), sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------------------- cache
class _CorruptEntry(Exception):
    pass


class TrialSetCache:
    """TrialSets saved on disk, keyed by source file content and parameters.

    Parameters
    ----------
    directory : path-like or None
        Where entries live (default :func:`default_cache_dir`: ``$BCIKIT_CACHE`` or
        ``~/.cache/bcikit``). Created on first write.
    verify : {"hash", "size"}
        How a stored entry is checked before use: every file's SHA-256 and size (default), or
        sizes and headers only (faster for very large sets).
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, verify: str = "hash"):
        check_option(verify, ("hash", "size"), "verify", owner="TrialSetCache")
        self.directory = Path(directory).expanduser() if directory is not None \
            else default_cache_dir()
        self.verify = verify

    def __repr__(self) -> str:
        return f"TrialSetCache({str(self.directory)!r})"

    # ------------------------------------------------------------------ keys
    def _sources(self, sources: Sequence[str | os.PathLike]) -> list[Path]:
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        return [check_file(s, what="source file") for s in sources]

    def key(self, sources: Sequence[str | os.PathLike], params: Mapping[str, Any]) -> str:
        """The entry key: SHA-256 (32 hex digits) of the format version, the sources' content
        hashes (in order) and the canonical parameters.

        Raises
        ------
        FileNotFoundError
            For a missing source file.
        TypeError
            For parameters JSON cannot hold.
        """
        paths = self._sources(sources)
        memo = _HashIndex(self.directory / _HASH_INDEX)
        hashes = [memo.any(p) for p in paths]
        memo.save()
        text = json.dumps({"version": CACHE_VERSION, "sources": hashes,
                           "params": json.loads(canonical_json(params))},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        """The folder of entry ``key``."""
        return self.directory / key

    def __contains__(self, key: str) -> bool:
        return (self.path(key) / _ENTRY).is_file()

    # ------------------------------------------------------------------ read / write
    def _load(self, entry: Path) -> Built:
        try:
            header = json.loads((entry / _ENTRY).read_text())
        except (OSError, ValueError) as err:
            raise _CorruptEntry(f"unreadable {_ENTRY}: {err}") from err
        if not isinstance(header, dict) or header.get("format") != "bcikit.TrialSetCache":
            raise _CorruptEntry(f"{_ENTRY} is not a bcikit cache header")
        if header.get("version") != CACHE_VERSION:
            raise _CorruptEntry(f"cache format version {header.get('version')} != {CACHE_VERSION}")
        files = header.get("files")
        names = header.get("names")
        if not isinstance(files, dict) or not isinstance(names, list):
            raise _CorruptEntry(f"{_ENTRY} lacks its file list")
        for rel, rec in files.items():
            f = entry / rel
            if not f.is_file():
                raise _CorruptEntry(f"missing file {rel}")
            if f.stat().st_size != rec["size"]:
                raise _CorruptEntry(f"{rel} has {f.stat().st_size} bytes, expected {rec['size']}")
            if self.verify == "hash" and _sha256_file(f) != rec["sha256"]:
                raise _CorruptEntry(f"{rel} does not match its checksum")
        sets = {}
        try:
            for i, name in enumerate(names):
                ts = TrialSet.load(entry / "sets" / str(i), mmap=True)
                if ts.X.shape[0] != len(ts.y):
                    raise _CorruptEntry(f"set {i}: X and y lengths differ")
                sets[name] = ts
        except _CorruptEntry:
            raise
        except Exception as err:  # any failure to read a stored set means the entry is unusable
            raise _CorruptEntry(f"cannot load a stored TrialSet: {type(err).__name__}: {err}") from err
        if header.get("kind") == "trialset":
            if len(sets) != 1:
                raise _CorruptEntry("a single-TrialSet entry holds several sets")
            return next(iter(sets.values()))
        return sets

    def _write(self, key: str, built: Built, sources: list[Path], params: Mapping[str, Any]) -> Path:
        if isinstance(built, TrialSet):
            kind, items = "trialset", [("", built)]
        else:
            kind, items = "mapping", list(built.items())
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for i, (_, ts) in enumerate(items):
                ts.save(tmp / "sets" / str(i))
            files = {}
            for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
                files[f.relative_to(tmp).as_posix()] = {"size": f.stat().st_size,
                                                        "sha256": _sha256_file(f)}
            header = {"format": "bcikit.TrialSetCache", "version": CACHE_VERSION, "kind": kind,
                      "names": [name for name, _ in items], "files": files,
                      "sources": [str(p) for p in sources],
                      "params": json.loads(canonical_json(params)),
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            (tmp / _ENTRY).write_text(json.dumps(header, indent=1))
            final = self.path(key)
            try:
                tmp.rename(final)
            except OSError:
                if (final / _ENTRY).is_file():  # another process finished the same entry first
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def _discard(self, entry: Path) -> None:
        trash = self.directory / f".trash-{entry.name}-{uuid.uuid4().hex[:8]}"
        try:
            entry.rename(trash)
        except OSError:
            trash = entry
        shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _check_built(built: Any) -> Built:
        if isinstance(built, TrialSet):
            return built
        if isinstance(built, Mapping):
            bad = [k for k, v in built.items() if not isinstance(k, str) or not isinstance(v, TrialSet)]
            if bad:
                raise TypeError(f"The cache build function must return a TrialSet or a dict "
                                f"{{str: TrialSet}}; entries {bad[:5]} are not.")
            return dict(built)
        raise TypeError(f"The cache build function must return a TrialSet or a dict "
                        f"{{str: TrialSet}}; got {type(built).__name__}.")

    def get_or_build(self, sources: Sequence[str | os.PathLike], params: Mapping[str, Any],
                     build: Callable[[], Built], *, verbose: bool | None = None) -> Built:
        """Load the entry for ``(sources, params)``, building and saving it first when absent.

        Parameters
        ----------
        sources : list of path-like
            Files (or folders) the result is computed from; their content is part of the key.
        params : dict
            Everything else the result depends on (JSON-like); canonicalised for the key.
        build : callable
            Called with no argument on a miss; returns a TrialSet or a dict ``{str: TrialSet}``.
        verbose : bool or None
            Report hits and misses through the bcikit logger when True (debug level otherwise).

        Returns
        -------
        TrialSet or dict of TrialSet
            Loaded from the cache, ``X`` memory-mapped (also right after a build).

        Raises
        ------
        FileNotFoundError
            For a missing source file.
        TypeError
            For parameters JSON cannot hold or a build result of the wrong type.
        """
        paths = self._sources(sources)
        key = self.key(paths, params)
        entry = self.path(key)
        say = logger.warning if verbose else logger.debug
        if entry.exists():
            try:
                out = self._load(entry)
                say("bcikit cache hit %s", entry)
                return out
            except _CorruptEntry as err:
                warn(f"The cache entry {str(entry)!r} is corrupt ({err}); rebuilding it.")
                self._discard(entry)
        say("bcikit cache miss %s: building", entry)
        built = self._check_built(build())
        final = self._write(key, built, paths, params)
        return self._load(final)

    def clear(self) -> int:
        """Delete every cache entry (and leftovers of interrupted builds) and the hash memo.

        Files in ``directory`` that are not cache entries are left alone.

        Returns
        -------
        int
            The number of entries removed.
        """
        if not self.directory.is_dir():
            return 0
        n = 0
        for child in self.directory.iterdir():
            if child.is_dir() and ((child / _ENTRY).is_file() or child.name.startswith(
                    (".tmp-", ".trash-"))):
                n += int((child / _ENTRY).is_file())
                shutil.rmtree(child, ignore_errors=True)
        (self.directory / _HASH_INDEX).unlink(missing_ok=True)
        return n
