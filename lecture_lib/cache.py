"""One disk cache of experiment results, shared by every kernel on a machine (``joblib.Memory``).

An experiment ``params -> result`` is deterministic given its arguments and seeds, so the second
visitor who asks for α = 0.4 should read the first one's result from disk instead of training
again. :func:`cached` marks such a function::

    @cached
    @accepts(lr=Positive(), steps=Int(1))
    def growth(model: str = "bn", lr: float = 1.0, steps: int = 600) -> GrowthResult: ...

What a result is keyed on: the function's qualified name, all its arguments (defaults filled in,
so ``growth(lr=1.0)`` and ``growth("bn", 1.0)`` share one entry) and :func:`library_key` (the
package version plus a hash of the science code's source, so any edit of ``lecture_lib`` outside
``viz/`` makes a fresh key; old entries are never read again and age out). A ``progress=`` keyword
is not part of the key: it is passed on when the result is computed and simply not called when
it is read. Arguments that cannot be keyed (a function, an unpicklable object) make that one call
uncached, never an error; so does a folder that cannot be written. joblib does the hashing, the storage and the eviction; the panels' in-memory LRU
(:mod:`lecture_lib.viz.runner`) stays in front, so a value already on screen never touches disk.

Where (read from the environment at each call, so a test or a kernel can change it):

- ``LECTURE_CACHE_DIR``: the folder; ``off`` (or ``0``, ``none``, ``false``, ``no``) switches the
  cache off. Default ``$XDG_CACHE_HOME/lecture5``, i.e. ``~/.cache/lecture5``.
  ``./lecture app --cache-dir DIR`` sets it for every kernel of the server.
- ``LECTURE_CACHE_SIZE``: the bound, joblib's notation (``500M``, ``2G``; default ``500M``).
  After each write the least recently used entries beyond it are deleted
  (``Memory.reduce_size``).

Concurrent writers are safe: joblib writes each result to a temporary file and renames it into
place, so two kernels computing the same key both return their own (identical) result and the
cache holds one entry; a reader that loses a race with eviction recomputes.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
from joblib.disk import memstr_to_bytes

from . import __version__

log = logging.getLogger(__name__)

DIR_ENV, SIZE_ENV = "LECTURE_CACHE_DIR", "LECTURE_CACHE_SIZE"
OFF = {"off", "0", "none", "false", "no"}
DEFAULT_SIZE = "500M"
PACKAGE_DIR = Path(__file__).resolve().parent


def cache_dir(environ=os.environ) -> Path | None:
    """The cache folder ``environ`` asks for, or ``None`` when the cache is off."""
    value = environ.get(DIR_ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lecture5"


def size_limit(environ=os.environ) -> int:
    """The bound in bytes (``LECTURE_CACHE_SIZE``, e.g. ``500M``)."""
    text = environ.get(SIZE_ENV, "").strip() or DEFAULT_SIZE
    try:
        return memstr_to_bytes(text) if text[-1:].upper() in "KMG" else int(text)
    except ValueError:
        raise ValueError(f"{SIZE_ENV} must be a size such as 500M or 2G (or bytes), got {text!r}") from None


@functools.cache
def library_key() -> str:
    """``"<version>+<hash>"``: the package version and a hash of every source and data file of the
    science code (``viz/`` excluded: a figure's looks do not change a result)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*")):
        relative = path.relative_to(PACKAGE_DIR)
        if path.suffix in {".py", ".json"} and relative.parts[0] not in {"viz", "__pycache__"}:
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:16]}"


@functools.cache
def memory(location: Path) -> joblib.Memory:
    """The ``joblib.Memory`` at ``location`` (one per folder and process)."""
    return joblib.Memory(location, verbose=0)


def experiment(function: str, library: str, arguments: dict, call: Callable, progress: Callable | None):
    """What joblib memoizes: keyed on ``function``, ``library`` and ``arguments``; ``call`` runs it."""
    return call() if progress is None else call(progress=progress)


@functools.cache
def _memorized(location: Path):
    return memory(location).cache(experiment, ignore=["call", "progress"])


def share(location: Path) -> Path:
    """Make ``location`` a cache that several accounts can fill (a JupyterHub whose users' servers run
    as system accounts): the folder and joblib's folder of :func:`experiment`'s entries are created
    world-writable with the sticky bit (mode 1777, as ``/tmp``), so that any account adds entries and
    reads all of them; each account evicts only its own. Run it as the owner of ``location``."""
    folder = location
    for part in (None, "lecture_lib", "cache", "experiment"):   # joblib's layout: <location>/<module path>/<function>
        folder = folder if part is None else folder / part
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o1777)
    return location


def trim(location: Path | None = None, environ=os.environ) -> None:
    """Delete the least recently used entries beyond :func:`size_limit` (a no-op when the cache is off)."""
    location = cache_dir(environ) if location is None else location
    if location is None:
        return
    try:
        memory(location).reduce_size(bytes_limit=size_limit(environ))
    except OSError as exc:      # another kernel deleting the same entry: its trim wins
        log.info("cache trim of %s stopped early: %s", location, exc)


def _hashable(arguments: dict) -> bool:
    """Whether joblib can key on ``arguments``: picklable, and no function among them (pickle names a
    function, so two closures of one name would share a key whatever they compute)."""
    if any(callable(value) for value in arguments.values()):
        return False
    try:
        joblib.hash(arguments)
    except Exception:  # noqa: BLE001 - pickle raises several types
        return False
    return True


def cached(fn: Callable) -> Callable:
    """``fn`` with its results kept in the shared disk cache (see the module docstring).

    The wrapper has ``fn``'s signature and docstring (``inspect.getsource`` shows ``fn``);
    ``wrapper.uncached`` is ``fn`` itself."""
    signature = inspect.signature(fn)
    takes_progress = "progress" in signature.parameters
    name = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> Any:
        location = cache_dir()
        if location is None:
            return fn(*args, **kwargs)
        progress = kwargs.pop("progress", None) if takes_progress else None
        bound = signature.bind(*args, **kwargs)     # a wrong argument: TypeError, as fn would raise
        bound.apply_defaults()
        bound.arguments.pop("progress", None)
        arguments = dict(bound.arguments)
        if not _hashable(arguments):
            log.info("%s not cached: an argument is a function or cannot be pickled", name)
            return fn(*args, **kwargs, **({} if progress is None else {"progress": progress}))
        computed = []

        def call(**extra):
            computed.append(fn(*bound.args, **bound.kwargs, **extra))
            return computed[-1]

        try:
            result = _memorized(location)(name, library_key(), arguments, call, progress)
        except OSError as exc:   # a read-only or full disk, another account's folder: never a panel's error
            log.warning("result cache %s not usable (%s): computing without it", location, exc)
            return computed[-1] if computed else fn(*args, **kwargs, **({} if progress is None else
                                                                        {"progress": progress}))
        if computed:
            trim(location)
        return result

    wrapper.uncached = fn
    return wrapper


class Recent:
    """The last ``maxsize`` values by key, the least recently used dropped; safe to share between threads."""

    def __init__(self, maxsize: int):
        self.maxsize, self.results, self._lock = maxsize, OrderedDict(), threading.Lock()

    def get(self, key, compute: Callable[[], Any]) -> Any:
        """The value kept for ``key``, or ``compute()`` kept for it (outside the lock: it may take a while)."""
        with self._lock:
            if key in self.results:
                self.results.move_to_end(key)
                return self.results[key]
        value = compute()
        with self._lock:
            self.results[key] = value
            self.results.move_to_end(key)
            while len(self.results) > self.maxsize:
                self.results.popitem(last=False)
        return value


def recent(maxsize: int) -> Callable[[Callable], Callable]:
    """``fn`` with its last ``maxsize`` results kept in this process, keyed on its arguments (defaults filled in,
    lists as tuples) except ``progress``: a panel passes a fresh ``progress`` callback with every request, so a
    key with it would never hit. For a result that several slider positions show (a step, a checkpoint): a move
    among them does not compute again. A hit returns at once and reports no progress; arguments that cannot be
    hashed make that call uncached. ``wrapper.results`` is the store (``clear()`` it to compute again)."""
    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        store = Recent(maxsize)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs) -> Any:
            bound = signature.bind(*args, **kwargs)     # a wrong argument: TypeError, as fn would raise
            bound.apply_defaults()
            key = tuple((name, _frozen(value)) for name, value in bound.arguments.items() if name != "progress")
            try:
                hash(key)
            except TypeError:                           # an unhashable argument
                return fn(*args, **kwargs)
            return store.get(key, lambda: fn(*args, **kwargs))

        wrapper.results = store.results
        return wrapper
    return decorate


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value
