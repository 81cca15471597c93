"""Intracranial EEG (sEEG, ECoG) readers and the re-referencing / feature steps they need.

A recording is read with MNE (EDF, BDF, GDF, BrainVision, FIF, EEGLAB, with the file checks
of :func:`bcikit.io.eeg.read_raw_file`), then given channel types and, when an electrodes table
is found, electrode positions. The electrodes table (BIDS ``*_electrodes.tsv`` or a lab's own
``name x y z`` / ``name R A S`` file) also gives each contact its shaft, contact number and
anatomical region.

Channel types are decided in this order (see :func:`read_ieeg`):

1. a BIDS ``*_channels.tsv`` next to the recording (its ``type`` column, and ``status == bad``
   marks bad channels);
2. channels whose names say what they are (``ECG``/``EKG`` -> ecg, ``EMG`` -> emg, ``EOG`` ->
   eog, ``TRIG``/``STI``/``Event``/``Status`` -> stim, ``DC01``, ``Annotations``, ``SpO2``,
   ``Pleth``, ``Resp``, ``Photic`` -> misc);
3. every other channel is an intracranial contact whose kind (seeg or ecog) comes from the
   ``ch_type`` argument, else the electrodes table's ``type`` column (depth -> seeg,
   grid/strip -> ecog), else the types the file itself stores (a FIF typed seeg), else the
   file name (``seeg`` or ``ecog`` in it). When none of these decides, a ``ValueError`` asks for
   ``ch_type``.

Shaft and contact numbers come from contact names: ``ROC1`` -> (``ROC``, 1), ``L'1`` -> (``L'``,
1), ``LA10`` -> (``LA``, 10), ``LACN 1`` -> (``LACN``, 1). Bipolar names (``B1-B2``) are refused
where monopolar contacts are expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bcikit.utils import check_file, check_option, logger, set_log_level, validate_type, warn

if TYPE_CHECKING:  # pragma: no cover
    import mne

__all__ = [
    "is_ieeg_path",
    "find_electrodes_file",
    "read_ieeg",
    "read_electrodes",
    "parse_contact_name",
    "bipolar_reference",
    "shaft_car",
    "regions",
    "high_gamma",
    "load_ieeg_trials",
]

#: Channel types treated as intracranial contacts.
IEEG_TYPES = ("seeg", "ecog", "dbs")

# BIDS channels.tsv ``type`` -> MNE channel type.
_BIDS_TYPES = {
    "SEEG": "seeg", "ECOG": "ecog", "DBS": "dbs", "EEG": "eeg", "EOG": "eog", "VEOG": "eog",
    "HEOG": "eog", "ECG": "ecg", "EMG": "emg", "MISC": "misc", "TRIG": "stim", "REF": "misc",
    "AUDIO": "misc", "PD": "misc", "EYEGAZE": "misc", "PUPIL": "misc", "SYSCLOCK": "misc",
    "ADC": "misc", "DAC": "misc", "GSR": "gsr", "TEMP": "temperature", "RESP": "resp",
    "PPG": "bio", "BIO": "bio",
}

# Names that say what a non-neural channel is (matched on the cleaned name, case-insensitive).
_NON_NEURAL = [
    (re.compile(r"^(ECG|EKG)", re.I), "ecg"),
    (re.compile(r"^EMG", re.I), "emg"),
    (re.compile(r"^[HV]?EOG", re.I), "eog"),
    (re.compile(r"^(TRIG|TRIGGER|STI\b|STI\s*\d|STIM\b|STATUS$|EVENTS?$)", re.I), "stim"),
    (re.compile(r"^(DC\s*\d+|(EDF\s+)?ANNOTATIONS?|SPO2|PLETH|RESP|PHOTIC|PULSE|OSAT|PR)$",
                re.I), "misc"),
]

_PREFIX = re.compile(r"^(EEG|POL|SEEG|ECOG|IEEG)\s+", re.I)
_SUFFIX = re.compile(r"-(REF|AVG|AV|CAR)$", re.I)
_BIPOLAR = re.compile(r"^\s*[A-Za-z][A-Za-z'_ ]*?\s*\d+\s*-\s*[A-Za-z][A-Za-z'_ ]*?\s*\d+\s*$")
_CONTACT = re.compile(r"^(.*?[^\d\s])\s*(\d+)$")
_BIDS_ENTITY = re.compile(r"(?:^|_)(sub|ses|acq|space)-([A-Za-z0-9]+)")


# ---------------------------------------------------------------------------------------------
# names
def _clean_name(name: str) -> str:
    """Strip acquisition decorations (``EEG ``/``POL `` prefixes, ``-Ref`` suffix)."""
    name = _PREFIX.sub("", str(name).strip())
    return _SUFFIX.sub("", name).strip()


def _match_key(name: str) -> str:
    """Key used to match a channel name to an electrodes-table name (case, spaces ignored)."""
    return re.sub(r"\s+", "", _clean_name(name)).casefold()


def _is_bipolar_name(name: str) -> bool:
    return bool(_BIPOLAR.match(_clean_name(name)))


def parse_contact_name(name: str) -> tuple[str, int | None]:
    """Split a monopolar contact name into its shaft and contact number.

    Parameters
    ----------
    name : str
        A contact name such as ``"ROC1"``, ``"L'1"``, ``"LA10"``, ``"A'12"`` or ``"LACN 1"``
        (acquisition decorations such as a leading ``"EEG "``/``"POL "`` or a trailing ``"-Ref"``
        are ignored).

    Returns
    -------
    shaft : str
        The name without its trailing number (the whole name when there is no number).
    contact : int or None
        The trailing number, or None when the name does not end in one.

    Raises
    ------
    ValueError
        When the name is a bipolar derivation such as ``"B1-B2"``.

    Examples
    --------
    >>> parse_contact_name("L'1")
    ("L'", 1)
    """
    validate_type(name, str, "name", owner="parse_contact_name")
    clean = _clean_name(name)
    if _BIPOLAR.match(clean):
        raise ValueError(f"Contact name {name!r} looks like a bipolar derivation (anode-cathode); "
                         f"a monopolar contact name such as 'B1' was expected.")
    m = _CONTACT.match(clean)
    if m is None:
        return clean, None
    return m.group(1).strip(), int(m.group(2))


def _non_neural_type(name: str) -> str | None:
    clean = _clean_name(name)
    for pattern, kind in _NON_NEURAL:
        if pattern.match(clean):
            return kind
    return None


# ---------------------------------------------------------------------------------------------
# sidecar files
def _recording_stems(path: Path, tails: Sequence[str] = ("_raw", "-raw")) -> list[str]:
    name = path.name
    for ext in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        name = path.stem if path.suffix else name
    stems = [name]
    for tail in tails:
        if name.endswith(tail):
            stems.append(name[: -len(tail)])
    return stems


def _entities(name: str) -> dict[str, str]:
    return {k: v for k, v in _BIDS_ENTITY.findall(name)}


def _bids_candidates(path: Path, suffix: str) -> list[Path]:
    """BIDS sidecars ``*<suffix>`` in the recording's folder, its parent and grandparent whose
    sub/ses/acq entities agree with the recording's (inheritance principle)."""
    rec = _entities(path.name)
    found: list[Path] = []
    folders = [path.parent, path.parent.parent, path.parent.parent.parent]
    for folder in folders:
        if not folder.is_dir():
            continue
        for cand in sorted(folder.glob(f"*{suffix}")):
            ent = _entities(cand.name)
            if not ent:
                continue
            if any(k in rec and rec[k] != v for k, v in ent.items() if k in ("sub", "ses", "acq")):
                continue
            if "sub" not in rec and "sub" in ent:
                # a file without BIDS entities accepts a BIDS sidecar only from its own folder
                if folder != path.parent:
                    continue
            found.append(cand)
        if found:
            break  # the nearest folder wins
    return found


def find_electrodes_file(path: str | Path) -> Path | None:
    """Find the electrodes table that belongs to a recording.

    Looks for ``<stem>_electrodes.tsv`` (or ``.csv``) next to the file (also with a trailing
    ``_raw`` removed from the stem), then for BIDS ``*_electrodes.tsv`` files in the recording's
    folder, its session folder and its subject folder whose ``sub``/``ses``/``acq`` entities agree with
    the recording's name.

    Returns
    -------
    Path or None
        The table, or None when there is none.

    Raises
    ------
    ValueError
        When several tables fit (e.g. one per ``space-``); pass ``electrodes=`` explicitly.
    """
    path = Path(path)
    for stem in _recording_stems(path):
        for ext in ("tsv", "csv"):
            cand = path.parent / f"{stem}_electrodes.{ext}"
            if cand.is_file():
                return cand
    cands = _bids_candidates(path, "_electrodes.tsv")
    if len(cands) > 1:
        no_space = [c for c in cands if "space" not in _entities(c.name)]
        if len(no_space) == 1:
            return no_space[0]
        raise ValueError(f"Several electrodes tables fit {str(path)!r}: "
                         f"{[c.name for c in cands]}; pass electrodes=<one of them>.")
    return cands[0] if cands else None


def _find_channels_file(path: Path) -> Path | None:
    for stem in _recording_stems(path, ("_ieeg", "_eeg", "_raw", "-raw")):
        cand = path.parent / f"{stem}_channels.tsv"
        if cand.is_file():
            return cand
    return None


def _find_coordsystem(electrodes_file: Path) -> Path | None:
    name = electrodes_file.name
    if name.endswith("_electrodes.tsv"):
        cand = electrodes_file.parent / (name[: -len("_electrodes.tsv")] + "_coordsystem.json")
        if cand.is_file():
            return cand
    space = _entities(name).get("space")
    cands = [c for c in sorted(electrodes_file.parent.glob("*_coordsystem.json"))
             if _entities(c.name).get("space") == space]
    return cands[0] if len(cands) == 1 else None


def is_ieeg_path(path: str | Path) -> bool:
    """Whether a recording is intracranial EEG, judged from its name and sidecars.

    True for BIDS ``_ieeg.`` files, names containing ``seeg``, ``ecog`` or ``ieeg`` (any case),
    and recordings with an electrodes table (``<stem>_electrodes.tsv`` next to them, or a BIDS
    ``*_electrodes.tsv`` in their folder or session folder).

    Parameters
    ----------
    path : path-like
        The recording (it need not exist for the name checks).

    Returns
    -------
    bool
    """
    validate_type(path, "path-like", "path", owner="is_ieeg_path")
    path = Path(path)
    low = path.name.lower()
    if any(tok in low for tok in ("seeg", "ecog", "ieeg")):
        return True
    try:
        return find_electrodes_file(path) is not None
    except ValueError:  # several tables fit: it is iEEG all the same
        return True


# ---------------------------------------------------------------------------------------------
# electrodes tables
_NAME_COLUMNS = ("name", "electrode", "label", "channel", "contact", "ch_name")
_REGION_COLUMNS = ("region", "anatomy", "anatomical_label", "destrieux_label_text",
                   "desikankilliany", "dkt", "aparc_label", "destrieux_label", "group")


def _find_column(df: pd.DataFrame, candidates: Sequence[str]) -> str | None:
    lower = {c.casefold(): c for c in df.columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def _region_column(df: pd.DataFrame) -> str | None:
    lower = {c.casefold(): c for c in df.columns}
    for cand in _REGION_COLUMNS:
        if cand in lower:
            col = lower[cand]
            if cand == "destrieux_label" and pd.api.types.is_numeric_dtype(df[col]):
                continue  # numeric atlas codes are not names
            return col
    for c in df.columns:  # any other atlas's text labels
        if c.casefold().endswith("_label_text"):
            return c
    return None


_UNIT_SCALE = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}
_FRAMES_WITHOUT_MNE_BIDS = {"ACPC": "ras", "ScanRAS": "ras", "CapTrak": "head",
                            "ElektaNeuromag": "head", "fsaverage": "mni_tal",
                            "Talairach": "mni_tal"}


def _bids_frame(system: str) -> str:
    try:
        from mne_bids.config import BIDS_TO_MNE_FRAMES
    except ImportError:  # pragma: no cover - mne-bids is a dependency
        BIDS_TO_MNE_FRAMES = _FRAMES_WITHOUT_MNE_BIDS
    if system in BIDS_TO_MNE_FRAMES:
        return BIDS_TO_MNE_FRAMES[system]
    if system.upper().startswith("MNI"):
        return "mni_tal"
    return "unknown"


def _guess_units(coords: np.ndarray, source: str) -> str | None:
    finite = np.abs(coords[np.isfinite(coords)])
    if finite.size == 0:
        return None
    peak = float(finite.max())
    if peak <= 0.3:
        return "m"
    if 20.0 <= peak < 500.0:
        return "mm"
    raise ValueError(f"Cannot tell the units of the coordinates in {source} (largest |value| "
                     f"{peak:g}: metres are <= 0.3, millimetres 20-500); pass units='m', 'mm' or "
                     f"'cm'.")


def read_electrodes(path: str | Path | pd.DataFrame, *, units: str = "auto",
                    coord_frame: str | None = None) -> pd.DataFrame:
    """Read an electrodes table into a standard form.

    Accepted layouts: BIDS ``*_electrodes.tsv`` (``name x y z ...``, units and frame from the
    ``*_coordsystem.json`` next to it), ``name x y z`` in metres or millimetres, ``name R A S``
    (RAS millimetres), and ``.csv`` files with an ``Electrode``/``label`` column. ``n/a`` cells
    are missing values.

    Parameters
    ----------
    path : path-like or DataFrame
        The table (a DataFrame is normalised the same way).
    units : {'auto', 'm', 'mm', 'cm'}
        Units of the coordinates in the file. ``'auto'`` reads ``iEEGCoordinateUnits`` from the
        coordsystem JSON, else guesses from the largest absolute coordinate (<= 0.3 -> metres,
        20-500 -> millimetres; anything else is refused as ambiguous).
    coord_frame : str or None
        MNE coordinate frame of the positions (``'head'``, ``'mri'``, ``'ras'``, ``'mni_tal'``,
        ``'unknown'``). None reads ``iEEGCoordinateSystem`` from the coordsystem JSON (ACPC ->
        ``'ras'``, MNI* -> ``'mni_tal'``), else ``'ras'`` for R/A/S columns, else ``'unknown'``.

    Returns
    -------
    DataFrame
        Columns ``name``, ``x``, ``y``, ``z`` (metres, NaN when unknown), ``shaft``, ``contact``
        (nullable int), ``region`` (when the table has a region-like column: ``region``,
        ``anatomy``, ``Destrieux_label_text``, ``DesikanKilliany``, ``group``...), then the other
        original columns (original ``x``/``y``/``z`` are replaced by the metre values).
        ``attrs`` holds ``units`` (of the file), ``coord_frame``, ``region_column`` and ``file``.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When no name column is found, coordinates are incomplete, units are ambiguous, names are
        repeated, or a name is a bipolar derivation.
    """
    check_option(units, ("auto", "m", "mm", "cm"), "units", owner="read_electrodes")
    json_units = json_frame = None
    if isinstance(path, pd.DataFrame):
        df = path.copy()
        source = "the electrodes DataFrame"
        file = None
    else:
        validate_type(path, "path-like", "path", owner="read_electrodes")
        file = check_file(path, what="electrodes table")
        source = repr(str(file))
        sep = "," if file.suffix.lower() == ".csv" else "\t"
        df = pd.read_csv(file, sep=sep, na_values=["n/a", "N/A", "NaN", "nan", ""],
                         keep_default_na=False)
        cs = _find_coordsystem(file)
        if cs is not None:
            try:
                meta = json.loads(cs.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"The coordinate-system file {str(cs)!r} is not valid JSON: "
                                 f"{err}") from err
            u = str(meta.get("iEEGCoordinateUnits", meta.get("EEGCoordinateUnits", ""))).strip()
            json_units = u if u in _UNIT_SCALE else None
            system = meta.get("iEEGCoordinateSystem", meta.get("EEGCoordinateSystem"))
            json_frame = _bids_frame(str(system)) if system else None
    if df.empty:
        raise ValueError(f"The electrodes table {source} has no rows.")

    name_col = _find_column(df, _NAME_COLUMNS)
    if name_col is None:
        raise ValueError(f"The electrodes table {source} has no name column; expected one of "
                         f"{list(_NAME_COLUMNS)}, got columns {list(df.columns)}.")
    names = df[name_col].astype(str).str.strip()
    if names.duplicated().any():
        raise ValueError(f"The electrodes table {source} repeats names "
                         f"{sorted(set(names[names.duplicated()]))[:5]}.")
    bipolar = [n for n in names if _is_bipolar_name(n)]
    if bipolar:
        raise ValueError(f"The electrodes table {source} lists bipolar derivations "
                         f"({bipolar[:3]}); it must list monopolar contacts such as 'B1'.")

    lower = {c.casefold(): c for c in df.columns}
    frame_hint = None
    if all(k in lower for k in ("x", "y", "z")):
        cols = [lower["x"], lower["y"], lower["z"]]
    elif all(c in df.columns for c in ("R", "A", "S")):
        cols = ["R", "A", "S"]
        frame_hint = "ras"
    else:
        partial = [k for k in ("x", "y", "z") if k in lower]
        if partial:
            raise ValueError(f"The electrodes table {source} has coordinate column(s) {partial} "
                             f"but not all of x, y, z.")
        cols = None
    if cols is not None:
        try:
            coords = df[cols].apply(pd.to_numeric, errors="raise").to_numpy(float)
        except (ValueError, TypeError) as err:
            raise ValueError(f"The electrodes table {source} has non-numeric coordinates in "
                             f"{cols}: {err}") from err
        unit = units if units != "auto" else (json_units or _guess_units(coords, source))
        coords = coords * _UNIT_SCALE[unit] if unit else coords
    else:
        coords = np.full((len(df), 3), np.nan)
        unit = None

    parsed = [parse_contact_name(n) for n in names]
    out = pd.DataFrame({
        "name": names.to_numpy(),
        "x": coords[:, 0], "y": coords[:, 1], "z": coords[:, 2],
        "shaft": [p[0] for p in parsed],
        "contact": pd.array([p[1] for p in parsed], dtype="Int64"),
    })
    region_col = _region_column(df)
    if region_col is not None:
        out["region"] = np.array([None if pd.isna(v) else str(v).strip()
                                  for v in df[region_col]], dtype=object)
    skip = {name_col} | ({c.casefold() for c in cols} if frame_hint is None and cols else set())
    for c in df.columns:
        if c in out.columns or c.casefold() in skip:
            continue
        out[c] = df[c].to_numpy()
    out.attrs.update(units=unit, coord_frame=coord_frame or json_frame or frame_hint or "unknown",
                     region_column=region_col, file=str(file) if file else None)
    return out


def _as_electrodes(electrodes: Any) -> pd.DataFrame:
    if isinstance(electrodes, pd.DataFrame) and {"name", "x", "y", "z", "shaft",
                                                  "contact"} <= set(electrodes.columns):
        return electrodes
    return read_electrodes(electrodes)


def _electrode_lookup(table: pd.DataFrame) -> dict[str, int]:
    return {_match_key(n): i for i, n in enumerate(table["name"])}


# ---------------------------------------------------------------------------------------------
# reading
def _read_channels_tsv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    for col in ("name", "type"):
        if col not in df.columns:
            raise ValueError(f"The channels file {str(path)!r} has no {col!r} column (columns: "
                             f"{list(df.columns)}).")
    return df


def _kind_from_table(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    v = str(value).strip().lower()
    if v in ("depth", "seeg", "stereo"):
        return "seeg"
    if v in ("grid", "strip", "ecog", "surface"):
        return "ecog"
    if v == "dbs":
        return "dbs"
    return None


def read_ieeg(path: str | Path, *, electrodes: Any = None, ch_type: str | None = None,
              preload: bool = True, verbose: bool | str | None = None) -> "mne.io.BaseRaw":
    """Read an sEEG/ECoG recording with channel types and electrode positions.

    Parameters
    ----------
    path : path-like
        A recording in a format :func:`bcikit.io.read_raw` reads (EDF, BDF, GDF, BrainVision
        ``.vhdr``, FIF, EEGLAB ``.set``); it is read with MNE after the same file checks.
    electrodes : path-like, DataFrame, False or None
        Electrodes table. None looks for one next to the recording (see
        :func:`find_electrodes_file`); False uses none. Channels found in the table get its
        positions (converted to metres) as an MNE montage; channels absent from it have no
        position. An explicitly given table that names none of the recording's channels is an
        error; a found one that names none is ignored with a warning.
    ch_type : {'seeg', 'ecog', 'dbs'} or None
        Kind of the intracranial contacts. None infers it (module docstring, step 3).
    preload : bool
        Load the data into memory.
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    raw : mne.io.BaseRaw
        The recording with channel types set, bad channels from ``channels.tsv`` in
        ``info['bads']`` and a montage when positions are known. The electrodes table used is
        not stored on ``raw``; :func:`regions` finds it again from ``raw.filenames``.

    Raises
    ------
    FileNotFoundError
        When the recording does not exist.
    ValueError
        When the kind of the contacts cannot be decided (pass ``ch_type='seeg'|'ecog'``), the
        format is not readable by MNE (MEF3), or an explicit electrodes table matches nothing.
    """
    import mne

    set_log_level(verbose)
    validate_type(path, "path-like", "path", owner="read_ieeg")
    if ch_type is not None:
        check_option(ch_type, IEEG_TYPES, "ch_type", owner="read_ieeg")
    path = check_file(path, what="iEEG recording")
    if path.suffix.lower() == ".mefd" or path.name.lower().endswith(".mefd/"):
        raise ValueError(f"{str(path)!r} is a MEF3 folder, which MNE does not read; convert it "
                         f"first (e.g. read it with `pip install pymef` and save a FIF).")
    # read_raw_file is bcikit.io.read_raw without the iEEG hand-off (no recursion): MNE's reader
    # plus the EDF size/CR-LF checks and the non-finite-sample check.
    from bcikit.io.eeg import read_raw_file

    raw = read_raw_file(path, preload=preload, verbose=verbose if verbose is not None else "error")

    # ---- electrodes table
    table: pd.DataFrame | None = None
    explicit = electrodes is not None and electrodes is not False
    if explicit:
        table = _as_electrodes(electrodes)
    elif electrodes is None:
        found = find_electrodes_file(path)
        table = read_electrodes(found) if found is not None else None
    row_of: dict[str, int] = {}
    if table is not None:
        lookup = _electrode_lookup(table)
        row_of = {ch: lookup[_match_key(ch)] for ch in raw.ch_names if _match_key(ch) in lookup}
        if not row_of:
            src = table.attrs.get("file") or "the given electrodes table"
            msg = (f"The electrodes table {src} names none of the {len(raw.ch_names)} channels of "
                   f"{str(path)!r} (table: {list(table['name'][:3])}..., recording: "
                   f"{raw.ch_names[:3]}...)")
            if explicit:
                raise ValueError(msg + ".")
            warn(msg + "; it is ignored (pass electrodes=False to skip the lookup).")
            table = None

    # ---- channel types
    mapping: dict[str, str] = {}
    bads: list[str] = []
    chan_file = _find_channels_file(path)
    from_tsv: dict[str, str] = {}
    if chan_file is not None:
        ctab = _read_channels_tsv(chan_file)
        for _, row in ctab.iterrows():
            name = str(row["name"]).strip()
            if name not in raw.ch_names:
                continue
            t = str(row["type"]).strip().upper()
            if t not in _BIDS_TYPES:
                raise ValueError(f"The channels file {str(chan_file)!r} gives channel {name!r} "
                                 f"the type {row['type']!r}; expected one of "
                                 f"{sorted(_BIDS_TYPES)}.")
            from_tsv[name] = _BIDS_TYPES[t]
            if "status" in ctab.columns and str(row["status"]).strip().lower() == "bad":
                bads.append(name)
        logger.info("Channel types of %d channel(s) from %s", len(from_tsv), chan_file.name)

    file_types = dict(zip(raw.ch_names, raw.get_channel_types()))
    neural: list[str] = []
    for ch in raw.ch_names:
        if ch in from_tsv:
            mapping[ch] = from_tsv[ch]
            if from_tsv[ch] in IEEG_TYPES and ch_type is not None:
                mapping[ch] = ch_type
            continue
        nn = _non_neural_type(ch)
        if nn is not None and file_types[ch] in ("eeg", "misc", nn):
            mapping[ch] = nn
        elif file_types[ch] in ("eeg",) + IEEG_TYPES:
            neural.append(ch)

    if neural:
        file_ieeg = {file_types[ch] for ch in neural} & set(IEEG_TYPES)
        low = path.name.lower()
        name_kinds = [k for k in ("seeg", "ecog") if k in low]
        for ch in neural:
            kind = ch_type
            if kind is None and table is not None and ch in row_of and "type" in table.columns:
                kind = _kind_from_table(table["type"].iloc[row_of[ch]])
            if kind is None and file_types[ch] in IEEG_TYPES:
                kind = file_types[ch]
            if kind is None and file_ieeg:
                kind = file_types[ch]  # the file types its contacts itself: trust its eeg ones
            if kind is None and len(name_kinds) == 1:
                kind = name_kinds[0]
            if kind is None:
                raise ValueError(f"Cannot tell whether the contacts of {str(path)!r} are sEEG or "
                                 f"ECoG (no channels.tsv, no electrode 'type' column, no 'seeg'/"
                                 f"'ecog' in the file name); pass ch_type='seeg' or "
                                 f"ch_type='ecog'.")
            mapping[ch] = kind
    changed = {ch: t for ch, t in mapping.items() if file_types[ch] != t}
    if changed:
        raw.set_channel_types(changed, on_unit_change="ignore", verbose="error")
    if bads:
        raw.info["bads"] = sorted(set(raw.info["bads"]) | set(bads), key=raw.ch_names.index)

    # ---- montage
    if table is not None:
        types = dict(zip(raw.ch_names, raw.get_channel_types()))
        ch_pos = {}
        for ch, i in row_of.items():
            xyz = table[["x", "y", "z"]].iloc[i].to_numpy(float)
            if types[ch] in IEEG_TYPES + ("eeg",) and np.isfinite(xyz).all():
                ch_pos[ch] = xyz
        if ch_pos:
            frame = table.attrs.get("coord_frame") or "unknown"
            montage = mne.channels.make_dig_montage(ch_pos=ch_pos, coord_frame=frame)
            raw.set_montage(montage, on_missing="ignore", verbose="error")
            logger.info("Positions of %d channel(s) from the electrodes table (frame %s)",
                        len(ch_pos), frame)
    return raw


# ---------------------------------------------------------------------------------------------
# re-referencing
def _shafts(raw, picks: list[str], electrodes: Any, owner: str) -> dict[str, list[tuple[int, str]]]:
    """Map shaft -> [(contact number, channel name)] sorted by contact."""
    table = _as_electrodes(electrodes) if electrodes is not None else None
    lookup = _electrode_lookup(table) if table is not None else {}
    shafts: dict[str, list[tuple[int, str]]] = {}
    for ch in picks:
        if _is_bipolar_name(ch):
            raise ValueError(f"{owner}: channel {ch!r} is already a bipolar derivation; "
                             f"{owner} needs monopolar contacts.")
        key = _match_key(ch)
        if key in lookup and not pd.isna(table["contact"].iloc[lookup[key]]):
            shaft = str(table["shaft"].iloc[lookup[key]])
            contact = int(table["contact"].iloc[lookup[key]])
        else:
            shaft, contact = parse_contact_name(ch)
        if contact is None:
            contact = -1  # not numbered: a shaft of its own, never paired
        shafts.setdefault(shaft, []).append((contact, ch))
    for shaft, items in shafts.items():
        numbers = [c for c, _ in items if c >= 0]
        if len(numbers) != len(set(numbers)):
            dup = sorted({c for c in numbers if numbers.count(c) > 1})
            raise ValueError(f"{owner}: shaft {shaft!r} has several channels numbered {dup} "
                             f"({[ch for c, ch in items if c in dup]}).")
        items.sort()
    return shafts


def _loaded_copy(raw):
    out = raw.copy()
    if not out.preload:
        out.load_data(verbose="error")
    return out


def bipolar_reference(raw: "mne.io.BaseRaw", *, electrodes: Any = None, max_gap: int = 1,
                      ch_types: Sequence[str] = IEEG_TYPES,
                      pairs: Sequence[tuple[str, str]] | None = None,
                      verbose: bool | str | None = None) -> "mne.io.BaseRaw":
    """Bipolar derivations between neighbouring contacts of each shaft.

    Rule: on each shaft (contacts grouped by name, ``LA1``, ``LA2``... -> shaft ``LA``), the
    good contacts are sorted by number and each one is paired with the next good contact when
    their numbers differ by at most ``max_gap`` (default 1: only physically adjacent contacts,
    ``n - (n+1)``). A missing or bad contact therefore breaks the chain: with ``LA3`` bad,
    ``LA2-LA4`` is *not* formed (unless ``max_gap >= 2``). The new channel is named
    ``"<anode>-<cathode>"`` (``"ROC1-ROC2"``), keeps the anode's type, holds ``anode - cathode``
    (computed by :func:`mne.set_bipolar_reference`) and sits at the midpoint of the two contacts
    when both positions are known. All monopolar contacts of ``ch_types`` are dropped (also
    those left unpaired and the bad ones); other channels (ECG, stim, misc) are kept after the
    bipolar ones.

    For ECoG grids the consecutive-number rule also pairs the last contact of a row with the
    first of the next; re-reference grids with :func:`mne.set_bipolar_reference` and an explicit
    pair list instead.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        Monopolar recording (it is not modified).
    electrodes : path-like, DataFrame or None
        Table giving shaft/contact per channel; None parses the channel names.
    max_gap : int
        Largest contact-number difference that still forms a pair.
    ch_types : sequence of str
        Channel types that are contacts.
    pairs : sequence of (anode, cathode) or None
        Form exactly these derivations, in this order, instead of the neighbour rule (e.g. to
        leave out pairs that straddle a gap between contact groups); ``electrodes`` and
        ``max_gap`` are then unused. Every contact must be a good channel of ``ch_types``.
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    mne.io.BaseRaw
        A new recording with the bipolar channels.

    Raises
    ------
    ValueError
        When channels are already bipolar, contact numbers repeat on a shaft, or no pair forms;
        with ``pairs``: a contact that is absent, bad, of another type, or repeated pairs.
    """
    import mne

    set_log_level(verbose)
    validate_type(max_gap, "int", "max_gap", owner="bipolar_reference")
    if max_gap < 1:
        raise ValueError(f"The 'max_gap' parameter of bipolar_reference must be >= 1. "
                         f"Got {max_gap!r} instead.")
    types = dict(zip(raw.ch_names, raw.get_channel_types()))
    contacts = [ch for ch in raw.ch_names if types[ch] in ch_types]
    good = [ch for ch in contacts if ch not in raw.info["bads"]]
    if pairs is not None:
        anodes, cathodes = _explicit_pairs(pairs, good, types)
    else:
        shafts = _shafts(raw, good, electrodes, "bipolar_reference")
        anodes, cathodes = [], []
        for items in shafts.values():
            numbered = [(c, ch) for c, ch in items if c >= 0]
            for (c1, a), (c2, k) in zip(numbered[:-1], numbered[1:]):
                if c2 - c1 <= max_gap and types[a] == types[k]:
                    anodes.append(a)
                    cathodes.append(k)
        if not anodes:
            raise ValueError(f"bipolar_reference found no neighbouring good contacts among "
                             f"{len(good)} channel(s) of types {list(ch_types)} (shafts: "
                             f"{sorted(shafts)[:10]}).")
        # order pairs as their anodes appear in the recording
        order = sorted(range(len(anodes)), key=lambda i: raw.ch_names.index(anodes[i]))
        anodes = [anodes[i] for i in order]
        cathodes = [cathodes[i] for i in order]
    names = [f"{a}-{k}" for a, k in zip(anodes, cathodes)]
    idx = {ch: i for i, ch in enumerate(raw.ch_names)}
    ch_info = []
    for a, k in zip(anodes, cathodes):
        la, lk = raw.info["chs"][idx[a]]["loc"][:3], raw.info["chs"][idx[k]]["loc"][:3]
        info_a = {}
        if np.isfinite(la).all() and np.isfinite(lk).all():
            loc = raw.info["chs"][idx[a]]["loc"].copy()
            loc[:3] = (la + lk) / 2.0
            info_a["loc"] = loc
        ch_info.append(info_a)
    src = _loaded_copy(raw)
    out = mne.set_bipolar_reference(src, anodes, cathodes, ch_name=names, ch_info=ch_info,
                                    drop_refs=False, copy=False, on_bad="ignore", verbose="error")
    drop = [ch for ch in contacts if ch in out.ch_names]
    out.drop_channels(drop)
    others = [ch for ch in out.ch_names if ch not in names]
    out.reorder_channels(names + others)
    out.info["bads"] = [b for b in out.info["bads"] if b in out.ch_names]
    logger.info("bipolar_reference: %d derivation(s) from %d contact(s)", len(names), len(good))
    return out


def _explicit_pairs(pairs: Any, good: list[str], types: Mapping[str, str]
                    ) -> tuple[list[str], list[str]]:
    """Check the ``pairs`` of :func:`bipolar_reference`; return anodes and cathodes."""
    validate_type(pairs, (list, tuple), "pairs", owner="bipolar_reference")
    if not pairs:
        raise ValueError("The 'pairs' parameter of bipolar_reference is empty.")
    anodes, cathodes = [], []
    for pair in pairs:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(c, str) for c in pair) or pair[0] == pair[1]):
            raise ValueError(f"The 'pairs' parameter of bipolar_reference must hold (anode, "
                             f"cathode) pairs of two different channel names. Got {pair!r}.")
        for c in pair:
            if c not in types:
                raise ValueError(f"bipolar_reference: pair {tuple(pair)} names {c!r}, which "
                                 f"the recording does not have.")
            if c not in good:
                raise ValueError(f"bipolar_reference: pair {tuple(pair)} names {c!r}, which is "
                                 f"bad or not an intracranial contact (type {types[c]!r}).")
        if _is_bipolar_name(pair[0]) or _is_bipolar_name(pair[1]):
            raise ValueError(f"bipolar_reference: pair {tuple(pair)} names a bipolar "
                             "derivation; pairs need monopolar contacts.")
        anodes.append(pair[0])
        cathodes.append(pair[1])
    names = [f"{a}-{k}" for a, k in zip(anodes, cathodes)]
    if len(set(names)) != len(names):
        raise ValueError(f"The 'pairs' parameter of bipolar_reference repeats a pair: {names}.")
    return anodes, cathodes


def shaft_car(raw: "mne.io.BaseRaw", *, electrodes: Any = None,
              ch_types: Sequence[str] = IEEG_TYPES,
              verbose: bool | str | None = None) -> "mne.io.BaseRaw":
    """Common average reference within each shaft.

    Every contact of a shaft (bad ones included) minus the mean of that shaft's *good* contacts
    at each sample. Shafts come from the electrodes table when given, else from the names.
    A shaft with fewer than two good contacts is reported with a warning (a single good contact
    becomes zero; a shaft with no good contact is left as is).

    Parameters
    ----------
    raw : mne.io.BaseRaw
        The recording (it is not modified).
    electrodes : path-like, DataFrame or None
        Table giving shaft/contact per channel; None parses the channel names.
    ch_types : sequence of str
        Channel types that are contacts.
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    mne.io.BaseRaw
        A re-referenced copy.
    """
    set_log_level(verbose)
    types = dict(zip(raw.ch_names, raw.get_channel_types()))
    contacts = [ch for ch in raw.ch_names if types[ch] in ch_types]
    if not contacts:
        raise ValueError(f"shaft_car found no channels of types {list(ch_types)}.")
    shafts = _shafts(raw, contacts, electrodes, "shaft_car")
    out = _loaded_copy(raw)
    bads = set(raw.info["bads"])
    thin = []
    for shaft, items in shafts.items():
        members = [ch for _, ch in items]
        goods = [ch for ch in members if ch not in bads]
        if len(goods) < 2:
            thin.append(shaft)
        if not goods:
            continue
        picks = [out.ch_names.index(ch) for ch in members]
        good_rows = np.array([members.index(ch) for ch in goods])

        def _car(x, rows=good_rows):
            return x - x[rows].mean(axis=0, keepdims=True)

        out.apply_function(_car, picks=picks, channel_wise=False, verbose="error")
    if thin:
        warn(f"shaft_car: shaft(s) {thin} have fewer than two good contacts; their single good "
             f"contact is now zero (a shaft with none is unchanged).")
    return out


def regions(raw_or_electrodes: Any, *, electrodes: Any = None,
            exclude: str | Sequence[str] = "bads") -> dict[str, list[str]]:
    """Group channels (or table rows) by anatomical region.

    Parameters
    ----------
    raw_or_electrodes : mne.io.BaseRaw, DataFrame or path-like
        A recording (its intracranial channels are grouped using ``electrodes``, or the table
        found next to ``raw.filenames[0]``), or an electrodes table / its path.
    electrodes : path-like, DataFrame or None
        Table for a recording; ignored for a table input.
    exclude : 'bads' or sequence of str
        Channels left out (``'bads'``: ``raw.info['bads']``).

    Returns
    -------
    dict
        ``{region: [names...]}`` in recording (or table) order; channels without a region are
        under ``"unknown"``. A bipolar channel ``"A1-A2"`` takes its anode's region.

    Raises
    ------
    ValueError
        When no table is found or the table has no region-like column.
    """
    import mne

    if isinstance(raw_or_electrodes, mne.io.BaseRaw):
        raw = raw_or_electrodes
        if electrodes is None:
            src = raw.filenames[0] if raw.filenames and raw.filenames[0] else None
            found = find_electrodes_file(src) if src else None
            if found is None:
                raise ValueError("regions: no electrodes table was given and none was found next "
                                 f"to the recording ({src}); pass electrodes=<table>.")
            electrodes = found
        table = _as_electrodes(electrodes)
        types = dict(zip(raw.ch_names, raw.get_channel_types()))
        skip = set(raw.info["bads"]) if exclude == "bads" else set(exclude)
        channels = [ch for ch in raw.ch_names if types[ch] in IEEG_TYPES + ("eeg",)
                    and ch not in skip]
    else:
        table = _as_electrodes(raw_or_electrodes)
        skip = set() if exclude == "bads" else set(exclude)
        channels = [n for n in table["name"] if n not in skip]
    if "region" not in table.columns:
        raise ValueError(f"regions: the electrodes table {table.attrs.get('file') or ''} has no "
                         f"region-like column (region, anatomy, Destrieux_label_text, "
                         f"DesikanKilliany, group, ...).")
    lookup = _electrode_lookup(table)
    out: dict[str, list[str]] = {}
    for ch in channels:
        key = _match_key(ch.split("-")[0] if _is_bipolar_name(ch) else ch)
        region = table["region"].iloc[lookup[key]] if key in lookup else None
        region = "unknown" if region is None or pd.isna(region) else str(region)
        out.setdefault(region, []).append(ch)
    return out


# ---------------------------------------------------------------------------------------------
# high gamma
def high_gamma(data: Any, *, sfreq: float | None = None, band: tuple[float, float] = (70., 150.),
               n_bands: int = 8, notch: float | None = None, normalize: bool = False,
               out_sfreq: float | None = None, verbose: bool | str | None = None):
    """High-gamma amplitude envelope.

    The band is split into ``n_bands`` log-spaced sub-bands (edges ``geomspace(lo, hi,
    n_bands + 1)``). Each sub-band is band-passed with MNE's zero-phase FIR filter (transition
    bands of a quarter of the sub-band width, at least 0.5 Hz), its analytic amplitude is taken
    with the Hilbert transform (:func:`scipy.signal.hilbert`), and the sub-band amplitudes are
    averaged. With ``normalize=True`` each sub-band amplitude is first divided by its own mean
    over time (per channel), so the 1/f fall-off does not let the lowest sub-band dominate the
    average; the result is then unitless. With ``n_bands=1`` it is the envelope of the whole band.
    The first and last few hundred milliseconds carry filter and Hilbert edge effects; cut them
    after epoching.

    Parameters
    ----------
    data : mne.io.BaseRaw or ndarray, shape (..., n_times)
        Signals. For a Raw, channels of types seeg/ecog/dbs/eeg are transformed and the others
        (ECG, stim, misc) are kept as they are.
    sfreq : float or None
        Sampling rate in Hz (required for arrays, read from ``raw.info`` otherwise).
    band : (float, float)
        Band edges in Hz.
    n_bands : int
        Number of log-spaced sub-bands.
    notch : float or None
        Line frequency (50 or 60 Hz); its harmonics inside the band are notch-filtered first.
    normalize : bool
        Divide each sub-band envelope by its mean before averaging.
    out_sfreq : float or None
        Resample the envelope to this rate (MNE's FFT resampling, anti-aliased).
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    Same type as ``data``
        The envelope (a new Raw or array; arrays keep their float dtype).

    Raises
    ------
    ValueError
        When ``sfreq / 2 <= band[1]``: the recording holds no energy at the top of the band
        (e.g. a 100 Hz file only reaches 50 Hz).
    """
    import mne
    from scipy.fft import next_fast_len
    from scipy.signal import hilbert

    set_log_level(verbose)
    is_raw = isinstance(data, mne.io.BaseRaw)
    if is_raw:
        if sfreq is not None and float(sfreq) != data.info["sfreq"]:
            raise ValueError(f"high_gamma: sfreq={sfreq} disagrees with raw.info['sfreq']="
                             f"{data.info['sfreq']}; leave sfreq=None for a Raw.")
        sfreq = float(data.info["sfreq"])
    elif sfreq is None:
        raise ValueError("high_gamma: pass sfreq= (Hz) with an array input.")
    validate_type(sfreq, "numeric", "sfreq", owner="high_gamma")
    sfreq = float(sfreq)
    if len(band) != 2 or not 0 < band[0] < band[1]:
        raise ValueError(f"The 'band' parameter of high_gamma must be (low, high) with "
                         f"0 < low < high. Got {band!r} instead.")
    lo, hi = float(band[0]), float(band[1])
    if sfreq / 2.0 <= hi:
        raise ValueError(f"high_gamma needs frequencies up to {hi:g} Hz but the signal is sampled "
                         f"at {sfreq:g} Hz, so it only holds frequencies below {sfreq / 2:g} Hz "
                         f"(Nyquist); a high-gamma envelope needs sfreq > {2 * hi:g} Hz. Use the "
                         f"original recording, not a downsampled one.")
    validate_type(n_bands, "int", "n_bands", owner="high_gamma")
    if n_bands < 1:
        raise ValueError(f"The 'n_bands' parameter of high_gamma must be >= 1. Got {n_bands}.")
    if out_sfreq is not None:
        validate_type(out_sfreq, "numeric", "out_sfreq", owner="high_gamma")
        if out_sfreq <= 0:
            raise ValueError(f"The 'out_sfreq' parameter of high_gamma must be > 0. "
                             f"Got {out_sfreq!r}.")

    if is_raw:
        out = _loaded_copy(data)
        picks = mne.pick_types(out.info, seeg=True, ecog=True, dbs=True, eeg=True, exclude=[])
        if len(picks) == 0:
            raise ValueError("high_gamma: the recording has no seeg/ecog/dbs/eeg channels.")
        x = out.get_data(picks=picks)
    else:
        x = np.asarray(data)
        if x.ndim < 1 or x.shape[-1] < 2:
            raise ValueError(f"high_gamma expects an array (..., n_times); got shape {x.shape}.")
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
    dtype = x.dtype
    shape = x.shape
    x2 = np.ascontiguousarray(x.reshape(-1, shape[-1]), dtype=np.float64)
    if not np.isfinite(x2).all():
        raise ValueError("high_gamma: the signal holds NaN or infinite samples.")
    n = x2.shape[-1]
    nyq = sfreq / 2.0
    if notch is not None:
        validate_type(notch, "numeric", "notch", owner="high_gamma")
        harmonics = [f for f in np.arange(notch, nyq, notch) if lo - 5 <= f <= hi + 5]
        if harmonics:
            x2 = mne.filter.notch_filter(x2, sfreq, harmonics, verbose="error")
    edges = np.geomspace(lo, hi, n_bands + 1)
    acc = np.zeros_like(x2)
    nfft = next_fast_len(n)
    for l_f, h_f in zip(edges[:-1], edges[1:]):
        trans = max(0.5, 0.25 * (h_f - l_f))
        h_trans = min(trans, nyq - h_f)
        xb = mne.filter.filter_data(x2, sfreq, l_f, h_f, l_trans_bandwidth=min(trans, l_f),
                                    h_trans_bandwidth=h_trans, verbose="error")
        env = np.abs(hilbert(xb, N=nfft, axis=-1)[..., :n])
        if normalize:
            mean = env.mean(axis=-1, keepdims=True)
            env = env / np.where(mean > 0, mean, 1.0)
        acc += env
    env = acc / n_bands
    if not is_raw and out_sfreq is not None:
        env = mne.filter.resample(env, up=float(out_sfreq), down=sfreq, axis=-1, verbose="error")
    if not is_raw:
        return env.reshape(shape[:-1] + env.shape[-1:]).astype(dtype, copy=False)
    out.apply_function(lambda _x: env, picks=picks, channel_wise=False, verbose="error")
    if out_sfreq is not None and float(out_sfreq) != sfreq:
        out.resample(float(out_sfreq), verbose="error")
    return out


# ---------------------------------------------------------------------------------------------
# trials
def load_ieeg_trials(raw: Any, *, event_map: Mapping[str, str], tmin: float, tmax: float,
                     reference: str | None = None, electrodes: Any = None,
                     ch_type: str | None = None, classes: Sequence[str] | None = None,
                     meta: Mapping[str, Any] | None = None,
                     baseline: tuple[float | None, float | None] | None = None,
                     verbose: bool | str | None = None):
    """Read (if needed), re-reference and epoch an iEEG recording into a TrialSet.

    A thin composition of :func:`read_ieeg`, :func:`bipolar_reference` / :func:`shaft_car` and
    :func:`bcikit.io.epochs_from_raw` (which defines the trial windows, labels and metadata).

    Parameters
    ----------
    raw : mne.io.BaseRaw or path-like
        The recording, or a file for :func:`read_ieeg`.
    event_map, tmin, tmax, classes, meta, baseline
        As for :func:`bcikit.io.epochs_from_raw`.
    reference : {None, 'bipolar', 'shaft_car'}
        Re-referencing applied before epoching (None keeps the recorded reference).
    electrodes, ch_type
        Passed to :func:`read_ieeg` (``electrodes`` also to the re-referencing).
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    TrialSet
        ``X`` (n_trials, n_contacts or n_pairs, n_times) in volts; bad channels are dropped.
    """
    import mne

    from bcikit.io.eeg import epochs_from_raw

    check_option(reference, (None, "bipolar", "shaft_car"), "reference", owner="load_ieeg_trials")
    if not isinstance(raw, mne.io.BaseRaw):
        raw = read_ieeg(raw, electrodes=electrodes, ch_type=ch_type, preload=True,
                        verbose=verbose)
        electrodes = None if electrodes is False else electrodes
    if reference == "bipolar":
        raw = bipolar_reference(raw, electrodes=electrodes, verbose=verbose)
    elif reference == "shaft_car":
        raw = shaft_car(raw, electrodes=electrodes, verbose=verbose)
    types = dict(zip(raw.ch_names, raw.get_channel_types()))
    picks = [ch for ch in raw.ch_names if types[ch] in IEEG_TYPES and ch not in raw.info["bads"]]
    if not picks:
        raise ValueError("load_ieeg_trials: the recording has no good seeg/ecog/dbs channel.")
    return epochs_from_raw(raw, event_map=event_map, tmin=tmin, tmax=tmax, classes=classes,
                           meta=meta, baseline=baseline, picks=picks, verbose=verbose)
