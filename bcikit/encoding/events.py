"""Movie events of encoding models: word onsets and scene cuts (spec §2.2).

=========  ===================  ==============================  ==================================
alignment  one event per        image                           text
=========  ===================  ==============================  ==================================
language   word onset           the frame at the onset          the word's sentence
vision     scene cut            the first frame after the cut   the closest preceding sentence
=========  ===================  ==============================  ==================================

The closest preceding sentence of a cut is the sentence of the last word starting at or before
the cut (the sentence under way, or the last one heard); before the first word it is empty.
Events stay in time order; events whose epoch ``[sample + round(tmin*sfreq), sample +
round(tmax*sfreq))`` leaves the recording are dropped, as are events after the last trigger (the
reader drops those). Frames are not part of the release: an event names its frame by time
(``frame_time``) and, with ``fps``, by number (``frame``: the frame on screen at a word onset,
``floor(t*fps)``; the first frame at or after a cut, ``ceil(t*fps)``), and ``frame_pattern``
turns those into image paths. Text length limits (<= 73 tokens for BERT-style tokenisers) are
applied by the feature extractor.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..utils import check_option, logger, set_log_level, validate_type
from .targets import seconds_to_samples

__all__ = ["ALIGNMENTS", "EVENT_COLUMNS", "make_events"]

ALIGNMENTS = ("language", "vision")
#: Columns of the events table, in order.
EVENT_COLUMNS = ("event", "alignment", "time", "sample", "frame_time", "frame", "image", "text",
                 "word", "sentence_idx", "scene_idx", "movie", "subject", "trial")


def _sentence_ids(words: pd.DataFrame) -> np.ndarray:
    ids = pd.to_numeric(words["sentence_idx"], errors="coerce").to_numpy(np.float64)
    return np.where(np.isfinite(ids), ids, -1).astype(np.int64)


def make_events(session, alignment: str, *, tmin: float = -2.0, tmax: float = 2.2,
                fps: float | None = None, frame_pattern: str | None = None,
                verbose: bool | str | None = None) -> pd.DataFrame:
    """Events of one alignment, with their image and text references.

    Parameters
    ----------
    session : BrainTreebankSession
        The session (:func:`bcikit.io.braintreebank.read_session`); any object with
        ``words(columns)``, ``scene_cuts()``, ``n_samples``, ``sfreq`` and ``movie`` works.
    alignment : {'language', 'vision'}
        Word onsets or scene cuts.
    tmin, tmax : float
        Epoch around each event in seconds (default -2.0 to 2.2 s: the spec's 161 windows).
    fps : float or None
        Frame rate of the movie, to number frames (``frame`` is -1 without it).
    frame_pattern : str or None
        Image path pattern with ``{movie}``, ``{frame}`` and ``{time}`` placeholders
        (e.g. ``"frames/{movie}/{frame:06d}.jpg"``; needs ``fps`` when it uses ``{frame}``).
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    DataFrame
        One row per event, in time order, columns :data:`EVENT_COLUMNS`: ``event`` (0..n-1),
        ``alignment``, ``time`` (movie s), ``sample`` (int64), ``frame_time`` (s), ``frame``,
        ``image`` (path or None), ``text`` (sentence), ``word`` (the word for language events,
        ``""`` for cuts), ``sentence_idx`` (-1 when none), ``scene_idx`` (number of cuts at or
        before the event), ``movie``, ``subject``, ``trial``.

    Raises
    ------
    ValueError
        Bad options, or the transcript lacks a needed column (``text``, ``start``,
        ``sentence``, ``sentence_idx``; the message names the file).
    """
    set_log_level(verbose)
    check_option(alignment, ALIGNMENTS, "alignment", owner="make_events")
    validate_type(tmin, "numeric", "tmin", owner="make_events")
    validate_type(tmax, "numeric", "tmax", owner="make_events")
    if not tmax > tmin:
        raise ValueError(f"make_events needs tmax > tmin; got tmin={tmin}, tmax={tmax}.")
    if fps is not None:
        validate_type(fps, "numeric", "fps", owner="make_events")
        if not fps > 0:
            raise ValueError(f"The 'fps' parameter of make_events must be > 0. Got {fps!r}.")
    if frame_pattern is not None:
        validate_type(frame_pattern, str, "frame_pattern", owner="make_events")
        if "{frame" in frame_pattern and fps is None:
            raise ValueError("make_events: frame_pattern uses {frame} but no fps was given.")

    words = session.words(columns=("text", "start", "sentence", "sentence_idx"))
    cuts = session.scene_cuts()
    cut_times = cuts["time"].to_numpy(np.float64)
    word_times = words["start"].to_numpy(np.float64)
    word_sent = _sentence_ids(words)
    word_text = words["sentence"].fillna("").astype(str).to_numpy()

    if alignment == "language":
        times = word_times
        samples = words["sample"].to_numpy(np.int64)
        text = word_text
        word = words["text"].fillna("").astype(str).to_numpy()
        sentence = word_sent
    else:
        times = cut_times
        samples = cuts["sample"].to_numpy(np.int64)
        last = np.searchsorted(word_times, times, side="right") - 1
        has = last >= 0
        text = np.where(has, word_text[np.clip(last, 0, None)] if len(word_text) else "", "")
        word = np.full(times.shape, "", dtype=object)
        sentence = np.where(has, word_sent[np.clip(last, 0, None)] if len(word_sent) else -1,
                            -1).astype(np.int64)
    scene = np.searchsorted(cut_times, times, side="right").astype(np.int64)

    sfreq = float(session.sfreq)
    first = samples + seconds_to_samples(tmin, sfreq)
    end = samples + seconds_to_samples(tmax, sfreq)
    inside = (first >= 0) & (end <= int(session.n_samples))
    n_out = int((~inside).sum())
    if n_out:
        logger.info("make_events: %d %s event(s) dropped (window leaves the recording)", n_out,
                    alignment)

    if fps is None:
        frame = np.full(times.shape, -1, dtype=np.int64)
        frame_time = times.copy()
    else:
        scaled = np.round(times * float(fps), 9)
        frame = (np.floor(scaled) if alignment == "language" else np.ceil(scaled)).astype(np.int64)
        frame_time = frame / float(fps)
    movie = str(getattr(session, "movie", ""))
    if frame_pattern is not None:
        image = [frame_pattern.format(movie=movie, frame=int(f), time=float(t))
                 for f, t in zip(frame, frame_time)]
    else:
        image = [None] * len(times)

    out = pd.DataFrame({
        "alignment": alignment,
        "time": times,
        "sample": samples,
        "frame_time": frame_time,
        "frame": frame,
        "image": pd.Series(image, dtype=object),
        "text": pd.Series(text, dtype=object),
        "word": pd.Series(word, dtype=object),
        "sentence_idx": sentence,
        "scene_idx": scene,
        "movie": movie,
        "subject": str(getattr(session, "subject", "")),
        "trial": int(getattr(session, "trial", 0)),
    })
    out = out.loc[inside].reset_index(drop=True)
    out.insert(0, "event", np.arange(len(out), dtype=np.int64))
    return out.loc[:, list(EVENT_COLUMNS)]
