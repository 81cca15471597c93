"""The braindecode signature's channel arguments, checked once for every bcikit network.

Every network takes ``n_chans`` and/or ``chs_info`` (``mne.Info["chs"]``: dicts with a
``"ch_name"`` key, a list of channel names, or an ``mne.Info``). These helpers turn them into a
validated channel count (and names), with errors that name the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..utils import check_range, validate_type


def channel_names(chs_info: Any, owner: str) -> list[str]:
    """Channel names from ``chs_info``.

    Parameters
    ----------
    chs_info : list of dict, list of str or mne.Info
        ``mne.Info["chs"]`` (dicts with a ``"ch_name"`` key), channel names, or an ``mne.Info``.
    owner : str
        The model named in error messages.

    Raises
    ------
    TypeError
        ``chs_info`` is not a sequence of channel dicts or names (the message names the first
        bad entry).
    """
    if isinstance(chs_info, Mapping) and "ch_names" in chs_info:    # an mne.Info
        return [str(n) for n in chs_info["ch_names"]]
    if isinstance(chs_info, (str, bytes)) or not isinstance(chs_info, Sequence):
        raise TypeError(f"The 'chs_info' parameter of {owner} must be a list of channel dicts "
                        "with a 'ch_name' key (mne.Info['chs']) or of channel names. Got "
                        f"{type(chs_info).__name__}.")
    names = []
    for i, ch in enumerate(chs_info):
        if isinstance(ch, str):
            names.append(ch)
        elif isinstance(ch, Mapping) and isinstance(ch.get("ch_name"), str):
            names.append(ch["ch_name"])
        else:
            raise TypeError(f"The 'chs_info' parameter of {owner} must hold dicts with a "
                            f"'ch_name' key or str; entry {i} is {ch!r:.60}.")
    return names


def resolve_n_chans(n_chans: Any, chs_info: Any, owner: str, *,
                    alternatives: str = "n_chans or chs_info") -> int:
    """The validated channel count from ``n_chans``, or from ``chs_info`` when it is None.

    When both are given they must agree.

    Parameters
    ----------
    n_chans : int or None
    chs_info : see :func:`channel_names`, or None
    owner : str
        The model named in error messages.
    alternatives : str
        What the "needs the number of channels" message suggests passing.

    Raises
    ------
    ValueError
        Neither is given, ``n_chans`` < 1, or ``chs_info`` describes another number of channels.
    TypeError
        ``n_chans`` is not an int, or ``chs_info`` is malformed.
    """
    count = len(channel_names(chs_info, owner)) if chs_info is not None else None
    if n_chans is None:
        if count is None:
            raise ValueError(f"{owner} needs the number of channels: pass {alternatives}.")
        n_chans = count
    validate_type(n_chans, "int", "n_chans", owner=owner)
    check_range(n_chans, "n_chans", low=1, owner=owner)
    if count is not None and count != n_chans:
        raise ValueError(f"The 'chs_info' parameter of {owner} describes {count} channels but "
                         f"n_chans is {n_chans}.")
    return int(n_chans)
