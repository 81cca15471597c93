"""Human-readable summaries of recordings, BIDS roots and dataset cards (``bcikit info PATH``).

Nothing heavy is imported at module level, so ``bcikit.io.describe`` stays the function.
"""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..utils import check_file, validate_type

_MAX_NAMES = 64
_MAX_FILES = 200


def _names(names: Sequence[str], limit: int = _MAX_NAMES) -> str:
    names = list(names)
    text = ", ".join(names[:limit])
    if len(names) > limit:
        text += f", ... ({len(names) - limit} more)"
    return text


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=indent,
                         subsequent_indent=indent + "    ", break_long_words=False,
                         break_on_hyphens=False)


def _channels_by_type(raw) -> list[str]:
    by_type: dict[str, list[str]] = {}
    for name, kind in zip(raw.ch_names, raw.get_channel_types()):
        by_type.setdefault(kind, []).append(name)
    lines = []
    for kind, names in by_type.items():
        lines.append(_wrap(f"{kind} ({len(names)}): {_names(names)}", "    "))
    return lines


def _event_counts(raw) -> tuple[str, Counter]:
    """Counts of annotation descriptions, else of stim-channel codes."""
    counts = Counter(str(d) for d in raw.annotations.description)
    if counts:
        return "annotations", counts
    import mne

    if len(mne.pick_types(raw.info, meg=False, stim=True)):
        events = mne.find_events(raw, shortest_event=1, initial_event=True, verbose="error")
        return "stim channel codes", Counter(str(int(c)) for c in events[:, 2])
    return "annotations", counts


def _format_events(raw, indent: str = "  ") -> list[str]:
    source, counts = _event_counts(raw)
    total = sum(counts.values())
    if not total:
        return [f"{indent}events: none"]
    lines = [f"{indent}events ({source}, {total} in {len(counts)} kind(s)):"]
    for desc, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{indent}  {desc}: {n}")
    return lines


def _format_raw(raw, title: str) -> list[str]:
    from .eeg import SUPPORTED_EXTENSIONS, file_extension

    sfreq = float(raw.info["sfreq"])
    fmt = SUPPORTED_EXTENSIONS.get(file_extension(title), "")
    lines = [title]
    lines.append(f"  {fmt + ', ' if fmt else ''}{len(raw.ch_names)} channels, {sfreq:g} Hz, "
                 f"{raw.n_times / sfreq:.3f} s ({raw.n_times} samples)")
    if raw.info["meas_date"] is not None:
        lines.append(f"  recorded: {raw.info['meas_date']:%Y-%m-%d %H:%M:%S %Z}".rstrip())
    if raw.info["bads"]:
        lines.append(_wrap(f"bad channels ({len(raw.info['bads'])}): "
                           f"{_names(raw.info['bads'])}", "  "))
    lines.append("  channels by type:")
    lines.extend(_channels_by_type(raw))
    lines.extend(_format_events(raw))
    return lines


def _one_line(raw) -> str:
    kinds = Counter(raw.get_channel_types())
    chans = ", ".join(f"{k} {n}" for k, n in kinds.items())
    source, counts = _event_counts(raw)
    ev = ", ".join(f"{d} {n}" for d, n in sorted(counts.items())) or "none"
    sfreq = float(raw.info["sfreq"])
    return f"{chans} ch; {sfreq:g} Hz; {raw.n_times / sfreq:.1f} s; events: {ev}"


def _describe_bids(root: Path, verbose) -> str:
    import json

    import mne_bids

    from .eeg import find_bids_recordings

    try:
        name = json.loads((root / "dataset_description.json").read_text()).get("Name", "")
    except (OSError, ValueError):
        name = ""
    lines = [f"BIDS dataset {str(root)!r}" + (f" ({name})" if name else "")]
    for key, label in (("subject", "subjects"), ("session", "sessions"), ("task", "tasks"),
                       ("run", "runs")):
        values = sorted(mne_bids.get_entity_vals(root, key))
        lines.append(f"  {label} ({len(values)}): {_names(values) if values else '-'}")
    paths = find_bids_recordings(root)
    datatypes = sorted({p.datatype for p in paths if p.datatype})
    lines.append(f"  datatypes: {', '.join(datatypes) if datatypes else '-'}")
    lines.append(f"  recordings ({len(paths)}):")
    for bp in paths[:_MAX_FILES]:
        rel = Path(bp.fpath).relative_to(root)
        try:
            raw = mne_bids.read_raw_bids(bp, verbose=verbose if verbose is not None else "error")
            summary = _one_line(raw)
        except (ValueError, RuntimeError, KeyError, OSError) as err:
            summary = f"unreadable ({type(err).__name__}: {err})"
        lines.append(_wrap(f"{rel}: {summary}", "    "))
    if len(paths) > _MAX_FILES:
        lines.append(f"    ... ({len(paths) - _MAX_FILES} more)")
    return "\n".join(lines)


def _describe_card(path: Path) -> str:
    from .cards import load_card

    card = load_card(path)
    lines = [f"Dataset card {str(path)!r}: {card.name} ({card.modality})"]
    for label, value in (("description", card.description), ("licence", card.licence),
                         ("citation", card.citation), ("url", card.url)):
        if value:
            lines.append(_wrap(f"{label}: {' '.join(value.split())}", "  "))
    try:
        root = card.resolve_root()
        lines.append(f"  root: {root}")
    except ValueError as err:
        root = None
        lines.append(f"  root: {card.root} ({err})")
    lines.append(f"  pattern: {card.pattern}; subjects ({len(card.subjects)}): "
                 f"{_names([str(s) for s in card.subjects], 12)}")
    if card.fetcher:
        lines.append(f"  fetcher: {card.fetcher} (used only with download=True)")
    for name, spec in card.tasks.items():
        default = " (default)" if name == card.default_task else ""
        lines.append(f"  task {name}{default}: window [{spec.tmin:g}, {spec.tmax:g}) s, classes "
                     f"{list(spec.classes)}")
        for group in spec.groups:
            runs = "all runs" if group.runs is None else f"runs {list(group.runs)}"
            mapping = ", ".join(f"{k} -> {v}" for k, v in group.events.items())
            lines.append(f"    {runs}: {mapping}")
        if root is not None:
            recs = card.recordings(task=name)
            present = sum(r.present for r in recs)
            lines.append(f"    files present: {present} of {len(recs)}")
    return "\n".join(lines)


def _describe_nifti(path: Path) -> str:
    import nibabel as nib

    img = nib.load(str(path))
    zooms = img.header.get_zooms()
    lines = [str(path), f"  NIfTI image, shape {tuple(int(s) for s in img.shape)}, voxel size "
                        f"{tuple(round(float(z), 3) for z in zooms[:3])} mm"]
    if len(img.shape) == 4:
        lines.append(f"  {img.shape[3]} volumes, TR {float(zooms[3]):g} s")
    return "\n".join(lines)


def describe(path: str | os.PathLike, *, verbose: bool | str | int | None = None) -> str:
    """Summarise a recording, a BIDS root or a dataset card as text.

    Parameters
    ----------
    path : path-like
        A file :func:`bcikit.io.read_raw` reads (iEEG files are typed by
        :func:`bcikit.io.ieeg.read_ieeg`), a NIfTI image, a dataset card (``.toml``) or a BIDS
        root folder.
    verbose : bool, str, int or None
        MNE's verbosity.

    Returns
    -------
    text : str
        For a recording: format, channel count, sampling rate, duration, channels by type
        (count and names) and events with counts. For a BIDS root: its subjects, sessions,
        tasks, runs and a one-line summary per recording. For a card: its fields, tasks and how
        many of the files are present.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A folder that is not a BIDS root, or a file no reader takes.

    Examples
    --------
    >>> print(describe("sample_seeg.edf"))  # doctest: +SKIP
    """
    validate_type(path, "path-like", "path", owner="describe")
    path = check_file(path, what="path")
    if path.is_dir():
        if not (path / "dataset_description.json").is_file():
            raise ValueError(f"{str(path)!r} is a folder but not a BIDS root (no "
                             "dataset_description.json); give a file, a card or a BIDS root.")
        return _describe_bids(path, verbose)
    name = path.name.lower()
    if name.endswith(".toml"):
        return _describe_card(path)
    if name.endswith((".nii", ".nii.gz")):
        return _describe_nifti(path)
    from .eeg import read_raw

    raw = read_raw(path, preload=False, verbose=verbose if verbose is not None else "error")
    return "\n".join(_format_raw(raw, str(path)))
