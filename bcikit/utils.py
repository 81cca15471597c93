"""Shared helpers: parameter validation, warnings, progress bars and verbosity.

Every message about a bad parameter is produced here so that the same sentence reads the same
everywhere (the model is MNE's ``_validate_type`` / ``_check_option``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("bcikit")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.WARNING)


class BcikitWarning(UserWarning):
    """Warnings emitted by bcikit (the test suite turns them into errors)."""


def warn(message: str, *, stacklevel: int = 2, category: type[Warning] = BcikitWarning) -> None:
    """Emit a warning that points at the caller's line, not at bcikit internals."""
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def _owner_prefix(owner: str | None) -> str:
    return f" of {owner}" if owner else ""


def _fmt_allowed(allowed: Iterable[Any]) -> str:
    return "{" + ", ".join(repr(a) for a in allowed) + "}"


def check_option(value: Any, allowed: Sequence[Any], name: str, *, owner: str | None = None) -> Any:
    """Check that ``value`` is one of ``allowed``.

    Raises
    ------
    ValueError
        "The 'protocol' parameter of MVCNetClassifier must be one of {'a', 'b'}. Got 'c' instead."
    """
    if value not in allowed:
        raise ValueError(
            f"The {name!r} parameter{_owner_prefix(owner)} must be one of "
            f"{_fmt_allowed(allowed)}. Got {value!r} instead."
        )
    return value


def _type_name(t: Any) -> str:
    if t is None or t is type(None):
        return "None"
    if isinstance(t, str):
        return t
    return getattr(t, "__name__", str(t))


def validate_type(value: Any, types: Any, name: str, *, owner: str | None = None) -> Any:
    """Check ``isinstance(value, types)``; booleans never pass as numbers.

    ``types`` may contain the strings ``"path-like"``, ``"int"`` and ``"numeric"`` and ``None``.
    """
    if not isinstance(types, tuple):
        types = (types,)
    resolved: list[type] = []
    for t in types:
        if t is None:
            resolved.append(type(None))
        elif t == "path-like":
            resolved.extend([str, os.PathLike])
        elif t == "int":
            resolved.append(int)
        elif t == "numeric":
            resolved.extend([int, float])
        else:
            resolved.append(t)
    ok = isinstance(value, tuple(resolved))
    if ok and isinstance(value, bool) and bool not in resolved:
        ok = False
    if not ok:
        names = " or ".join(_type_name(t) for t in types)
        raise TypeError(
            f"The {name!r} parameter{_owner_prefix(owner)} must be an instance of {names}. "
            f"Got {type(value).__name__} ({value!r:.60}) instead."
        )
    return value


def check_range(
    value: float,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    owner: str | None = None,
) -> float:
    """Check ``low <= value <= high`` (bounds optional) and say what was expected."""
    bad = False
    if low is not None:
        bad |= value < low if low_inclusive else value <= low
    if high is not None:
        bad |= value > high if high_inclusive else value >= high
    if bad:
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        raise ValueError(
            f"The {name!r} parameter{_owner_prefix(owner)} must be in {lb}{lo}, {hi}{hb}. "
            f"Got {value!r} instead."
        )
    return value


def check_file(path: str | os.PathLike, *, what: str = "file", must_exist: bool = True) -> Path:
    """Return ``path`` as a ``Path``; raise ``FileNotFoundError`` naming it when absent."""
    p = Path(path).expanduser()
    if must_exist and not p.exists():
        raise FileNotFoundError(f"The {what} {str(p)!r} does not exist.")
    return p


def check_random_state(seed: Any):
    """Return a ``numpy.random.Generator`` from None, an int or a Generator."""
    import numpy as np

    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise TypeError(f"'random_state' must be None, an int or a numpy Generator. Got {seed!r} instead.")


def _is_interactive() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # pragma: no cover - IPython half-imported
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
             verbose: bool | None = None, leave: bool = False, **kwargs):
    """One progress bar for all long loops, built on ``tqdm.auto``.

    ``verbose=None`` shows the bar only when stderr is a terminal (or in Jupyter, where
    ``tqdm.auto`` renders a widget); ``True``/``False`` force it on/off.
    """
    from tqdm.auto import tqdm

    if verbose is None:
        disable = not (_is_interactive() or _in_notebook())
    else:
        disable = not verbose
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=leave, **kwargs)


def set_log_level(verbose: bool | str | int | None) -> None:
    """Set bcikit's logger level: True -> INFO, False -> WARNING, or a logging level name."""
    if verbose is None:
        return
    if isinstance(verbose, bool):
        level = logging.INFO if verbose else logging.WARNING
    elif isinstance(verbose, str):
        level = getattr(logging, verbose.upper())
    else:
        level = int(verbose)
    logger.setLevel(level)


def require(module: str, *, extra: str | None = None, purpose: str = ""):
    """Import an optional dependency lazily and say exactly what to install when it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        hint = f"pip install 'bcikit-neuro[{extra}]'" if extra else f"pip install {module}"
        raise ImportError(f"{purpose or module} needs the package {module!r}: {hint}") from err


def lazy_exports(package: str, names: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for a package whose names live in submodules.

    ``names`` maps an exported name to the submodule (relative to ``package``) that defines it;
    the submodule is imported on first access, so ``import package`` stays cheap (no torch).
    Use it as ``__getattr__, __dir__ = lazy_exports(__name__, _LAZY)``.
    """
    import importlib

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
