"""Flower 1.42 glue: the FLEEG ServerApp and ClientApp on top of :mod:`bcikit.federated`.

The Flower app in ``federated/`` (``flwr run federated ...``) is two lines on top of this module:
``server_app.py`` holds :func:`make_server_app` and ``client_app.py`` :func:`make_client_app`.
Everything that decides what a site sends, how the server averages and what happens when a site
fails lives here, where it can be tested without Ray.

What travels (spec ``fleeg.md`` §5):

- server -> site, ``train``: an :class:`~flwr.app.ArrayRecord` ``"arrays"`` holding the shared
  tensors only (FLEEGNet: block-4 convolution and head; never a batch-norm tensor) and a
  :class:`~flwr.app.ConfigRecord` ``"config"`` (``server-round``, ``proximal-mu`` with FedProx,
  ``clipping_norm`` with differential privacy);
- site -> server, ``train``: ``"arrays"`` (the same keys, after one local epoch), a
  :class:`~flwr.app.MetricRecord` ``"metrics"`` (``num-examples``, ``train-loss``,
  ``compute-s``, ``handler-s``: seconds of the epoch and of the whole handler) and a
  ConfigRecord ``"site"`` (``name`` and the shared ``signature``: a hash of key, shape and
  dtype);
- ``evaluate``: the round's aggregate in, ``val-loss``, ``val-acc``, ``num-examples``,
  ``compute-s``, ``handler-s`` out;
- ``query.identify`` (before round 1): site name, signature, number of classes and training
  trials; ``query`` (after the last round): test accuracy and loss of the selected snapshot.

No trial, label, subject identifier, local tensor, batch-norm statistic or optimiser state ever
leaves a site: they persist in ``context.state`` and in the site's own checkpoint folder
``<run-dir>/<run-name>/fold-<k>/sites/<site>/round-<r>.pt`` (keyed by site, run and fold, never
by Flower's node id, so that a restarted site or a resumed run finds them).

Failures: a site whose ClientApp raises, or that does not answer within ``round-timeout``
seconds, is reported by name. With at least ``min-sites`` valid replies the round completes
without it (a warning names it); with fewer the run stops with :class:`SiteFailure`, whose
message names every failed site and why. Sampling never waits forever for sites to connect
(``node-wait-timeout``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
import time
import tomllib
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import check_option, require

require("flwr", extra="fl", purpose="bcikit's Flower app")

import torch  # noqa: E402
from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common import log  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import (  # noqa: E402
    DifferentialPrivacyClientSideFixedClipping,
    FedAvg,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords  # noqa: E402

from .simulate import SIZES  # noqa: E402
from .sites import Site  # noqa: E402

__all__ = ["FLConfig", "SiteConfig", "SiteFailure", "parse_sites", "split_sites_text",
           "real_site", "site_unavailable", "REAL_SITES", "SITE_GROUPS", "SPLIT_NOTES",
           "site_config_from_node", "load_site_data", "build_site", "FleegStrategy",
           "FleegDPFixedClipping", "make_server_app", "make_client_app", "server_main",
           "InProcessGrid", "PollingGrid",
           "run_in_process", "fold_dir", "site_checkpoint_dir", "server_dir",
           "read_server_result", "SHARED_RECORD", "TRAIN_METRICS", "EVALUATE_METRICS",
           "TEST_METRICS", "IDENTIFY_METRICS"]

# record names inside messages
SHARED_RECORD = "arrays"
METRICS_RECORD = "metrics"
CONFIG_RECORD = "config"
SITE_RECORD = "site"
STATE_RECORD = "bcikit-site"  # in context.state: never sent
QUERY_IDENTIFY = "query.identify"
# every metric key a site may send, per message type (the audit test checks these sets)
TRAIN_METRICS = ("num-examples", "train-loss", "compute-s", "handler-s")
EVALUATE_METRICS = ("num-examples", "val-loss", "val-acc", "compute-s", "handler-s")
TEST_METRICS = ("num-examples", "test-acc", "test-loss", "best-round")
IDENTIFY_METRICS = ("num-examples", "n-outputs")
SITE_FIELDS = ("name", "signature")


class SiteFailure(RuntimeError):
    """A round (or the set-up) got fewer valid site replies than ``min-sites``."""


# ============================================================================== run config
@dataclass(frozen=True)
class FLConfig:
    """The Flower app's run configuration (``[tool.flwr.app.config]`` of ``federated/``).

    Flower spells the keys with dashes (``num-rounds``); the attributes use underscores.

    Attributes
    ----------
    sites : str
        Simulation only: where the sites come from, one site per SuperNode (``partition-id``
        picks the row). ``"sim[:tiny|small|full][:N][:negative][:seed=S]"`` (the heterogeneous
        simulator of :func:`bcikit.federated.simulate_sites`), a sites file (TOML with
        ``[[site]]`` tables) or comma-separated dataset cards. Deployed SuperNodes ignore it and
        read their site from ``--node-config``.
    num_sites : int
        Sites the server waits for (0: the number of rows of ``sites``).
    min_sites : int
        Fewest valid replies for a round to complete (0: every site). A round with fewer stops
        the run with :class:`SiteFailure`; with at least this many, failed sites are reported
        by name and left out of that round's average.
    num_rounds : int
        Rounds (= local epochs; the cosine schedule spans them all).
    fold : int
        LOSO fold inside every site (spec §4).
    n_folds : int
        Folds of the federation (0: the largest simulated site's subject count, or the site's
        own count for dataset cards).
    validation : {"subject", "trial"}
        Validation split (spec §4).
    weighting : {"samples", "equal"}
        FedAvg weights: proportional to each site's trial count (see ``site_weights``), or
        equal.
    site_weights : {"train", "total"}
        The trial count a site reports as ``num-examples`` for ``weighting="samples"``:
        ``"train"`` (bcikit): this fold's training trials; ``"total"`` (official FLEEG recipe,
        preset ``fleeg-reference``): all the site's trials, a constant over folds (spec §3).
    seed : int
        Initialisation, subject shuffles and the server's initial shared weights (123).
    fedprox_mu : float
        FedProx proximal weight (0: plain FedAvg). Sent as ``proximal-mu``.
    round_timeout : float
        Seconds the server waits for the replies of one message round.
    node_wait_timeout : float
        Seconds the server waits for sites to connect before giving up.
    run_name : str
        Name of the run inside ``run_dir`` (checkpoints are keyed by run name, fold and site).
    run_dir : str
        Folder of the server's outputs (and, in simulation, of the sites' checkpoints).
    data_dir : str
        Folder of the sites' memory-mapped trial caches (empty: ``<run_dir>/cache``).
    resume : bool
        Continue from the latest server and site checkpoints of ``run_name``/``fold``.
    stop_after : int
        Stop after this round (0: run all ``num_rounds``); with ``resume`` a later run goes on.
    local_only : bool
        The local-only baseline: sites merge the initial broadcast once and never the aggregate.
    stem_geometry : {"solve", "reference"}
        FLEEGNet geometry.
    device : str
        Torch device at the sites.
    dp_clipping_norm : float
        Client-side fixed clipping of the shared-tensor update (0: off); see
        :class:`FleegDPFixedClipping`.
    dp_noise_multiplier : float
        Gaussian noise multiplier of the central DP aggregate (with clipping).
    audit : bool
        Each site appends the structure of every message it sends (record names, keys, shapes,
        dtypes, metric values) to ``<site checkpoint folder>/sent.jsonl``.
    keep_checkpoints : int
        Site and server checkpoints kept per run (the latest ones).
    site_cache : int
        Sites a ClientApp process keeps built in memory between messages (0: rebuild for every
        message from ``context.state``); a cached site is reused only when ``context.state``
        still holds the state it last wrote.
    """

    sites: str = "sim:tiny:3"
    num_sites: int = 0
    min_sites: int = 0
    num_rounds: int = 250
    fold: int = 0
    n_folds: int = 0
    validation: str = "subject"
    weighting: str = "samples"
    site_weights: str = "train"
    seed: int = 123
    fedprox_mu: float = 0.0
    round_timeout: float = 3600.0
    node_wait_timeout: float = 120.0
    run_name: str = "fleeg"
    run_dir: str = "runs/federated"
    data_dir: str = ""
    resume: bool = False
    stop_after: int = 0
    local_only: bool = False
    stem_geometry: str = "solve"
    device: str = "cpu"
    dp_clipping_norm: float = 0.0
    dp_noise_multiplier: float = 0.0
    audit: bool = False
    keep_checkpoints: int = 3
    site_cache: int = 2

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> "FLConfig":
        """Validate Flower's run config (dashed keys) into an :class:`FLConfig`.

        Raises
        ------
        ValueError, TypeError
            Naming the key, what is allowed and what came in.
        """
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in dict(run_config).items():
            if key not in known:
                raise ValueError(f"Unknown run-config key {key!r} of the bcikit Flower app; "
                                 f"known keys: {sorted(known)}.")
            f = known[key]
            default = f.default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError(f"Run-config key {key!r} must be true or false. "
                                    f"Got {value!r} instead.")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"Run-config key {key!r} must be an integer. "
                                    f"Got {value!r} instead.")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"Run-config key {key!r} must be a number. "
                                    f"Got {value!r} instead.")
                value = float(value)
            elif isinstance(default, str) and not isinstance(value, str):
                raise TypeError(f"Run-config key {key!r} must be a string. "
                                f"Got {value!r} instead.")
            kwargs[f.name] = value
        cfg = cls(**kwargs)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Range and option checks (the error names the dashed key)."""
        owner = "the bcikit Flower app"
        check_option(self.validation, ("subject", "trial"), "validation", owner=owner)
        check_option(self.weighting, ("samples", "equal"), "weighting", owner=owner)
        check_option(self.site_weights, ("train", "total"), "site-weights", owner=owner)
        check_option(self.stem_geometry, ("solve", "reference"), "stem-geometry", owner=owner)
        for key, low in (("num_rounds", 1), ("fold", 0), ("n_folds", 0), ("num_sites", 0),
                         ("min_sites", 0), ("stop_after", 0), ("keep_checkpoints", 1),
                         ("site_cache", 0)):
            if getattr(self, key) < low:
                raise ValueError(f"Run-config key {key.replace('_', '-')!r} must be >= {low}. "
                                 f"Got {getattr(self, key)} instead.")
        for key in ("fedprox_mu", "dp_clipping_norm", "dp_noise_multiplier"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"Run-config key {key.replace('_', '-')!r} must be >= 0. "
                                 f"Got {getattr(self, key)} instead.")
        for key in ("round_timeout", "node_wait_timeout"):
            if not getattr(self, key) > 0:
                raise ValueError(f"Run-config key {key.replace('_', '-')!r} must be > 0 "
                                 f"seconds. Got {getattr(self, key)} instead.")
        if self.stop_after and self.stop_after > self.num_rounds:
            raise ValueError(f"Run-config key 'stop-after' ({self.stop_after}) exceeds "
                             f"'num-rounds' ({self.num_rounds}).")
        if self.dp_noise_multiplier > 0 and self.dp_clipping_norm <= 0:
            raise ValueError("Run-config key 'dp-noise-multiplier' needs 'dp-clipping-norm' > 0 "
                             "(the noise is scaled by the clipping norm).")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.run_name):
            raise ValueError(f"Run-config key 'run-name' must be a plain folder name (letters, "
                             f"digits, '_', '-', '.'). Got {self.run_name!r} instead.")

    def to_run_config(self) -> dict[str, Any]:
        """The dashed-key mapping Flower takes (``--run-config``)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def fold_dir(run_dir: str | os.PathLike, run_name: str, fold: int) -> Path:
    """``<run_dir>/<run_name>/fold-<fold>``: one federation's outputs."""
    return Path(run_dir).expanduser() / run_name / f"fold-{int(fold)}"


def server_dir(cfg: FLConfig) -> Path:
    """The server's folder: checkpoints ``round-<r>.pt`` and ``result.json``."""
    return fold_dir(cfg.run_dir, cfg.run_name, cfg.fold) / "server"


def site_checkpoint_dir(run_dir: str | os.PathLike, run_name: str, fold: int, site: str) -> Path:
    """A site's checkpoint folder: ``<run_dir>/<run_name>/fold-<k>/sites/<site>``."""
    return fold_dir(run_dir, run_name, fold) / "sites" / site


def _round_file(folder: Path, round_: int) -> Path:
    return folder / f"round-{int(round_):04d}.pt"


def _saved_rounds(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    out = []
    for p in folder.glob("round-*.pt"):
        m = re.fullmatch(r"round-(\d+)\.pt", p.name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def _prune(folder: Path, keep: int) -> None:
    rounds = _saved_rounds(folder)
    for r in rounds[:-keep] if keep > 0 else []:
        try:
            _round_file(folder, r).unlink()
        except FileNotFoundError:  # pragma: no cover - a concurrent prune
            pass


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ============================================================================== site configs
SITE_GROUPS = ("subject", "run", "chronological")
#: Split descriptions written into ``bcikit fl simulate``'s results.json, per ``group``.
SPLIT_NOTES = {
    "subject": "leave-one-subject-out inside the site (spec section 4)",
    "run": "leave-one-run-out inside the site (runs shuffled, each run standing in for a "
           "subject)",
    "chronological": "within-subject, chronological by run: the last run tests, the run "
                     "before it validates (validation='trial': the last 10 % of each class's "
                     "earlier trials), earlier runs train; the same split in every fold "
                     "(one subject: leave-one-subject-out is impossible)",
}
#: Real sites named by a short alias in ``sites`` (``"sim:tiny:2,S001"``): alias -> (dataset
#: card in the source checkout's ``datasets/``, site name, task, split group).
REAL_SITES = {
    "S001": ("realdata_eegmmidb_S001", "S001", "imagery_lr", "chronological"),
}


@dataclass(frozen=True)
class SiteConfig:
    """Where one site's trials come from and where it keeps its state.

    Attributes
    ----------
    name : str
        Site name (unique in the federation; checkpoints and results are keyed by it).
    card : str or None
        Dataset card (``datasets/*.toml``) of a real site.
    task : str or None
        Card task (default: the card's default task).
    subjects : tuple or None
        Card subjects to load (default: all).
    sim : dict or None
        Simulated site: ``{"n_sites", "size", "negative_control", "seed"}`` of
        :func:`bcikit.federated.simulate_sites`; the site is the row named ``row`` (default:
        ``name``).
    row : str or None
        The simulator row of a simulated site (several sites can share a row's geometry with
        different simulator seeds, e.g. for 20-site simulations).
    batch_size, lr : int / float or None
        Recipe overrides (default: the simulator's table, or 64 and 0.01 for cards).
    group : {"subject", "run", "chronological"}
        Split. ``"subject"``: leave-one-subject-out inside the site (spec §4). ``"run"``: the
        same, each run standing in for a subject (runs shuffled). ``"chronological"``: within
        each subject by run in recording order, the last run testing and the run before it
        validating (``validation="trial"``: the last tenth of the earlier runs' trials); one
        split for every fold (:func:`bcikit.federated.sites.split_site_chronological`). The
        PhysioNet S001 site (one subject) uses it: leave-one-subject-out is impossible there.
    data_dir : str
        Cache folder for the site's memory-mapped splits ("" : no cache).
    run_dir : str
        Root of the site's checkpoints.
    fault : str
        Fault drill: ``"raise@R"`` (the ClientApp raises in round ``R``'s training),
        ``"hang:S@R"`` (does not answer for ``S`` seconds, then raises), ``"exit@R"`` (the
        process exits), ``"kill@R"`` (the process gets SIGKILL, as from ``kill -9``).
    """

    name: str
    card: str | None = None
    task: str | None = None
    subjects: tuple | None = None
    sim: Mapping[str, Any] | None = None
    row: str | None = None
    batch_size: int | None = None
    lr: float | None = None
    group: str = "subject"
    data_dir: str = ""
    run_dir: str = ""
    fault: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*",
                                                              self.name):
            raise ValueError(f"A site name must be a plain file name (letters, digits, '_', '-',"
                             f" '.'); got {self.name!r}.")
        if (self.card is None) == (self.sim is None):
            raise ValueError(f"Site {self.name!r} needs exactly one data source: a dataset "
                             f"card or a simulator spec.")
        check_option(self.group, SITE_GROUPS, "group", owner=f"site {self.name!r}")
        if self.fault:
            _parse_fault(self.fault, self.name)

    def data_key(self, *, fold: int, n_folds: int | None, validation: str, seed: int) -> str:
        """Hash of everything the site's splits depend on (cache key)."""
        payload = {"card": self.card, "task": self.task, "subjects": self.subjects,
                   "sim": dict(self.sim) if self.sim else None, "row": self.row,
                   "group": self.group,
                   "batch_size": self.batch_size, "lr": self.lr, "fold": fold,
                   "n_folds": n_folds, "validation": validation, "seed": seed, "format": 1}
        if self.card is not None:
            try:
                payload["card_text"] = Path(self.card).read_text()
            except OSError:
                pass
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse_fault(text: str, site: str) -> tuple[str, float, int]:
    m = re.fullmatch(r"(raise|exit|kill|hang(?::(\d+(?:\.\d+)?))?)@(\d+)", text.strip())
    if not m:
        raise ValueError(f"Site {site!r}: fault must be 'raise@R', 'exit@R', 'kill@R' or "
                         f"'hang:SECONDS@R'; got {text!r}.")
    kind = m.group(1).split(":")[0]
    return kind, float(m.group(2) or 3600.0), int(m.group(3))


def _parse_sim(text: str) -> dict[str, Any]:
    """``sim[:size][:N][:negative][:seed=S]`` -> simulator knobs."""
    parts = [p.strip() for p in text.split(":")]
    if parts[0] != "sim":
        raise ValueError(f"A simulator spec starts with 'sim'; got {text!r}.")
    out: dict[str, Any] = {"n_sites": 9, "size": "small", "negative_control": False, "seed": 0}
    for p in parts[1:]:
        if p in SIZES:
            out["size"] = p
        elif p.isdigit():
            out["n_sites"] = int(p)
        elif p in ("negative", "negative_control", "negative-control"):
            out["negative_control"] = True
        elif p.startswith("seed=") and p[5:].lstrip("-").isdigit():
            out["seed"] = int(p[5:])
        else:
            raise ValueError(f"Simulator spec {text!r}: unknown part {p!r} (expected one of "
                             f"{list(SIZES)}, a site count, 'negative' or 'seed=N').")
    if not 1 <= out["n_sites"] <= 9:
        raise ValueError(f"Simulator spec {text!r}: the simulator has 1 to 9 sites; got "
                         f"{out['n_sites']}.")
    return out


def _sim_table(sim: Mapping[str, Any]) -> list:
    from .simulate import site_specs

    return site_specs(int(sim["n_sites"]), size=str(sim["size"]))


def _subjects(value: Any, where: str) -> tuple | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        out: list = []
        for part in value.split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            if m:
                out.extend(range(int(m.group(1)), int(m.group(2)) + 1))
            elif part.isdigit():
                out.append(int(part))
            elif part:
                out.append(part)
        return tuple(out)
    raise TypeError(f"{where}: subjects must be a list, an integer or a string like '1-9'; "
                    f"got {value!r}.")


def _card_name(card: Path) -> str:
    with open(card, "rb") as fh:
        data = tomllib.load(fh)
    name = data.get("dataset", {}).get("name") if isinstance(data.get("dataset"), dict) else None
    return str(name) if name else card.stem


def _resolve(path: str, base: Path | None) -> str:
    p = Path(os.path.expandvars(path)).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p)


_SITE_KEYS = {"name", "card", "task", "subjects", "sim", "row", "batch_size", "lr", "group",
              "fault"}


def _sites_from_file(path: Path) -> list[SiteConfig]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{str(path)!r}: not valid TOML ({err}).") from None
    rows = data.get("site")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{str(path)!r}: a sites file needs one or more [[site]] tables.")
    out = []
    for i, row in enumerate(rows):
        where = f"{str(path)!r}: [[site]] {i + 1}"
        if not isinstance(row, dict):
            raise ValueError(f"{where} must be a table.")
        unknown = sorted(set(row) - _SITE_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_SITE_KEYS)}.")
        kw: dict[str, Any] = {}
        sim = row.get("sim")
        if sim is not None:
            if isinstance(sim, str):
                sim = _parse_sim(sim)
            elif isinstance(sim, dict):
                base_sim = _parse_sim("sim")
                unknown = sorted(set(sim) - set(base_sim))
                if unknown:
                    raise ValueError(f"{where}: unknown sim key(s) {unknown}; allowed: "
                                     f"{sorted(base_sim)}.")
                sim = {**base_sim, **sim}
            else:
                raise ValueError(f"{where}: sim must be a string like 'sim:small:9' or a table.")
            kw["sim"] = sim
            if "name" not in row:
                raise ValueError(f"{where}: a simulated site needs the name of its simulator "
                                 f"row (e.g. name = \"sim-A\").")
        if "card" in row:
            kw["card"] = _resolve(str(row["card"]), path.parent)
        name = row.get("name") or (_card_name(Path(kw["card"])) if "card" in kw else None)
        for key in ("task", "row", "batch_size", "lr", "group", "fault"):
            if key in row:
                kw[key] = row[key]
        if "row" in kw and sim is None:
            raise ValueError(f"{where}: 'row' applies to simulated sites only.")
        if sim is not None:
            rows = [sp.name for sp in _sim_table(sim)]
            if (kw.get("row") or row["name"]) not in rows:
                raise ValueError(f"{where}: {kw.get('row') or row['name']!r} is not a row of the "
                                 f"simulator (rows: {rows}); name the row with 'row'.")
        if "subjects" in row:
            kw["subjects"] = _subjects(row["subjects"], where)
        out.append(SiteConfig(str(name), **kw))
    return out


def real_site(alias: str) -> SiteConfig:
    """The :class:`SiteConfig` of a real site named by its alias in :data:`REAL_SITES`
    (``"S001"``: PhysioNet EEG Motor Movement/Imagery subject S001, left vs right hand imagery,
    chronological split by run)."""
    if alias not in REAL_SITES:
        raise ValueError(f"Unknown real-site alias {alias!r}; known: {sorted(REAL_SITES)}.")
    from ..io.cards import find_card

    card_name, name, task, group = REAL_SITES[alias]
    card = find_card(card_name)
    if card is None:
        raise FileNotFoundError(f"Real site {alias!r}: the dataset card {card_name}.toml is not "
                                f"in ./datasets nor in the bcikit source checkout.")
    return SiteConfig(name, card=str(card.resolve()), task=task, group=group)


def site_unavailable(site: SiteConfig) -> str | None:
    """Why a card site's recordings are missing (None when every file the site's task needs
    is there, and for simulated sites). Reads no recording."""
    if site.card is None:
        return None
    from ..io.cards import load_card

    card = load_card(site.card)
    missing = [r.path for r in card.recordings(task=site.task, subjects=list(site.subjects)
                                               if site.subjects else None) if not r.present]
    if not missing:
        return None
    return (f"{len(missing)} recording(s) of {card.name} are missing, e.g. {str(missing[0])!r} "
            f"(real recordings: set BCIKIT_REALDATA or see {site.card})")


def split_sites_text(text: str | os.PathLike) -> list[str]:
    """The comma-separated items of a ``sites`` value (simulator specs, aliases, files)."""
    return [t.strip() for t in str(text).split(",") if t.strip()]


def parse_sites(text: str | os.PathLike, *, run_dir: str = "", data_dir: str = ""
                ) -> list[SiteConfig]:
    """The sites of a simulation.

    Parameters
    ----------
    text : str or path-like
        Comma-separated items, each one of: ``"sim[:tiny|small|full][:N][:negative][:seed=S]"``
        (the heterogeneous simulator's sites; default size ``small``, 9 sites); a real-site
        alias of :data:`REAL_SITES` (``"S001"``: PhysioNet S001, left vs right hand imagery,
        split chronologically by run); a sites file (TOML with ``[[site]]`` tables: ``name``,
        ``card`` or ``sim``, optional ``task``, ``subjects``, ``batch_size``, ``lr``,
        ``group``, ``fault``); a dataset card. E.g. ``"sim:tiny:2,S001"``.
    run_dir, data_dir : str
        Written into every site (checkpoint root and cache folder).

    Returns
    -------
    list of SiteConfig

    Raises
    ------
    ValueError, FileNotFoundError
        For an unknown form, a missing file or duplicate site names.
    """
    items = split_sites_text(text)
    if not items:
        raise ValueError("No sites given (expected 'sim[:size][:N]', a real-site alias such as "
                         "'S001', a sites file or cards).")
    sites: list[SiteConfig] = []
    for item in items:
        if item.split(":")[0] == "sim":
            sim = _parse_sim(item)
            sites.extend(SiteConfig(sp.name, sim=sim) for sp in _sim_table(sim))
        elif item in REAL_SITES:
            sites.append(real_site(item))
        else:
            path = Path(os.path.expandvars(item)).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"Site source {item!r} is neither 'sim[...]', a real-site "
                                        f"alias {sorted(REAL_SITES)} nor an existing sites file "
                                        f"or dataset card.")
            with open(path, "rb") as fh:
                try:
                    data = tomllib.load(fh)
                except tomllib.TOMLDecodeError as err:
                    raise ValueError(f"{item!r}: not valid TOML ({err}).") from None
            if "site" in data:
                sites.extend(_sites_from_file(path))
            elif "dataset" in data:
                sites.append(SiteConfig(_card_name(path), card=str(path.resolve())))
            else:
                raise ValueError(f"{item!r} is neither a sites file ([[site]] tables) nor a "
                                 f"dataset card ([dataset] table).")
    names = [s.name for s in sites]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"Site names must be unique; {dup} appear more than once (give sites "
                         f"explicit names in a sites file).")
    return [replace(s, run_dir=s.run_dir or run_dir, data_dir=s.data_dir or data_dir)
            for s in sites]


def site_config_from_node(node_config: Mapping[str, Any], cfg: FLConfig) -> SiteConfig:
    """A site's :class:`SiteConfig` from its SuperNode's ``node_config``.

    Deployment (``flower-supernode --node-config '...'``): ``site`` (name) and one of
    ``dataset-card`` (path), ``sim`` (``"sim:small:9"``: the simulator row named ``site``) or
    ``sites-file`` (the row named ``site``); optional ``task``, ``subjects``, ``batch-size``,
    ``lr``, ``group``, ``fault``, ``data-dir`` (trial cache) and ``run-dir`` (checkpoints;
    default: the run config's ``run-dir``). Simulation: ``partition-id`` picks the row of the
    run config's ``sites``.

    Raises
    ------
    ValueError
        Naming the node-config key that is missing or wrong.
    """
    nc = dict(node_config)
    known = {"site", "dataset-card", "sim", "sites-file", "task", "subjects", "batch-size", "lr",
             "group", "fault", "data-dir", "run-dir", "partition-id", "num-partitions"}
    unknown = sorted(set(nc) - known)
    if unknown:
        raise ValueError(f"Unknown node-config key(s) {unknown}; known: {sorted(known)}.")
    run_dir = str(nc.get("run-dir") or cfg.run_dir)
    data_dir = str(nc.get("data-dir") or cfg.data_dir or (Path(run_dir) / "cache"))
    if "site" not in nc:
        if "partition-id" not in nc:
            raise ValueError("The node config names no site: set node-config 'site' (and "
                             "'dataset-card', 'sim' or 'sites-file') on the SuperNode.")
        rows = parse_sites(cfg.sites, run_dir=run_dir, data_dir=data_dir)
        pid = int(nc["partition-id"])
        if not 0 <= pid < len(rows):
            raise ValueError(f"partition-id {pid} is outside the {len(rows)} site(s) of "
                             f"sites={cfg.sites!r}; run the simulation with num-supernodes = "
                             f"{len(rows)}.")
        return rows[pid]
    name = str(nc["site"])
    sources = [k for k in ("dataset-card", "sim", "sites-file") if nc.get(k)]
    if len(sources) != 1:
        raise ValueError(f"Site {name!r}: the node config needs exactly one of 'dataset-card', "
                         f"'sim' or 'sites-file'; got {sources or 'none'}.")
    kw: dict[str, Any] = {"run_dir": run_dir, "data_dir": data_dir}
    if sources[0] == "sites-file":
        rows = {s.name: s for s in parse_sites(str(nc["sites-file"]))}
        if name not in rows:
            raise ValueError(f"Site {name!r} is not in the sites file {nc['sites-file']!r} "
                             f"(it has {sorted(rows)}).")
        base = rows[name]
    elif sources[0] == "sim":
        sim = _parse_sim(str(nc["sim"]))
        names = [sp.name for sp in _sim_table(sim)]
        if name not in names:
            raise ValueError(f"Site {name!r} is not a row of the simulator {nc['sim']!r} "
                             f"(rows: {names}).")
        base = SiteConfig(name, sim=sim)
    else:
        card = Path(os.path.expandvars(str(nc["dataset-card"]))).expanduser()
        if not card.is_file():
            raise FileNotFoundError(f"Site {name!r}: dataset card {str(card)!r} does not exist.")
        base = SiteConfig(name, card=str(card.resolve()))
    if "task" in nc:
        kw["task"] = str(nc["task"])
    if "subjects" in nc:
        kw["subjects"] = _subjects(nc["subjects"], f"site {name!r} node-config")
    if "batch-size" in nc:
        kw["batch_size"] = int(nc["batch-size"])
    if "lr" in nc:
        kw["lr"] = float(nc["lr"])
    for key in ("group", "fault"):
        if key in nc:
            kw[key] = str(nc[key])
    return replace(base, **kw)


# ============================================================================== site building
_DATA_MEMO: "OrderedDict[str, Any]" = OrderedDict()
_DATA_MEMO_SIZE = 16
_LOCK = threading.RLock()


def _n_folds(site: SiteConfig, cfg_n_folds: int, n_subjects: int, fold: int) -> int:
    if cfg_n_folds:
        return cfg_n_folds
    if site.sim is not None:
        # spec §4: K = the largest site's subject count (as make_sites does) of the table
        return max(sp.n_subjects for sp in _sim_table(site.sim))
    return max(fold + 1, n_subjects)


def _site_trials(site: SiteConfig):
    """(TrialSet, batch_size, lr, dataset) of a site, before splitting."""
    from ..data.trialset import TrialSet

    if site.sim is not None:
        from .simulate import simulate_sites

        sim = site.sim
        ((spec, ts),) = simulate_sites(int(sim["n_sites"]), size=str(sim["size"]),
                                       negative_control=bool(sim["negative_control"]),
                                       seed=int(sim["seed"]), only=[site.row or site.name])
        return ts, site.batch_size or spec.batch_size, site.lr or spec.lr, None
    from ..io import load_dataset

    ts = load_dataset(site.card, task=site.task, subjects=list(site.subjects)
                      if site.subjects else None)
    if not isinstance(ts, TrialSet):
        raise ValueError(f"Site {site.name!r}: the card {site.card!r} gives subjects with "
                         f"different channel sets ({sorted(ts)}); one site needs one montage "
                         f"(pick subjects with 'subjects').")
    dataset = str(ts.meta["dataset"].iloc[0]) if "dataset" in ts.meta and len(ts) else None
    return ts, site.batch_size or 64, site.lr or 0.01, dataset


def load_site_data(site: SiteConfig, *, fold: int = 0, n_folds: int = 0,
                   validation: str = "subject", seed: int = 123):
    """The site's :class:`~bcikit.federated.SiteData` for a fold, cached memory-mapped.

    The first call simulates or reads the site's trials, band-passes and splits them
    (:meth:`SiteData.from_trialset`) and, when the site has a ``data_dir``, writes the splits
    there (``<data_dir>/<site>-fold<k>-<hash>``); later calls, in any process, load them
    memory-mapped. Splits are those of :func:`bcikit.federated.make_sites` for simulated sites.
    """
    from .sites import SiteData

    with _LOCK:
        probe_n_folds = n_folds or None
        key = site.data_key(fold=fold, n_folds=probe_n_folds, validation=validation, seed=seed)
        memo_key = f"{site.name}:{key}:{site.data_dir}"
        if memo_key in _DATA_MEMO:
            _DATA_MEMO.move_to_end(memo_key)
            return _DATA_MEMO[memo_key]
        cache = Path(site.data_dir) / f"{site.name}-fold{fold}-{key}" if site.data_dir else None
        if cache is not None and (cache / "site.json").exists():
            data = SiteData.load(cache, mmap=True)
        else:
            ts, batch_size, lr, dataset = _site_trials(site)
            if site.group == "run":
                meta = ts.meta.copy()
                meta["subject"] = (meta["subject"].astype(str) + "-run"
                                   + meta["run"].astype(str))
                ts = _with_meta(ts, meta)
            n_sub = int(ts.meta["subject"].astype(str).nunique())
            chrono = site.group == "chronological"
            data = SiteData.from_trialset(
                ts, site.name, fold=fold,
                n_folds=None if chrono else _n_folds(site, n_folds, n_sub, fold),
                validation=validation, seed=seed, batch_size=int(batch_size), lr=float(lr),
                dataset=dataset, split="chronological" if chrono else "subject")
            if cache is not None:
                tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex[:8]}")
                data.save(tmp)
                try:
                    os.rename(tmp, cache)
                except OSError:  # another process cached it first: keep theirs
                    import shutil

                    shutil.rmtree(tmp, ignore_errors=True)
                data = SiteData.load(cache, mmap=True)
        _DATA_MEMO[memo_key] = data
        while len(_DATA_MEMO) > _DATA_MEMO_SIZE:
            _DATA_MEMO.popitem(last=False)
        return data


def _with_meta(ts, meta):
    from ..data.trialset import TrialSet

    return TrialSet(ts.X, ts.y, meta, ts.info, classes=ts.classes, tmin=ts.tmin)


def build_site(site: SiteConfig, cfg: FLConfig):
    """A fresh :class:`~bcikit.federated.Site` for ``site`` under the run config ``cfg``
    (exactly what :func:`bcikit.federated.make_sites` builds for simulated sites).

    FedProx is not part of the site: the ClientApp passes each train message's
    ``proximal-mu`` to :meth:`~bcikit.federated.Site.train_round`, as
    :func:`bcikit.federated.run_federated` does with its ``prox_mu``."""
    data = load_site_data(site, fold=cfg.fold, n_folds=cfg.n_folds, validation=cfg.validation,
                          seed=cfg.seed)
    return Site(data, rounds=cfg.num_rounds, seed=cfg.seed, stem_geometry=cfg.stem_geometry,
                device=cfg.device)


# ============================================================================== records
def _to_arrayrecord(shared: Mapping[str, Any], order: Sequence[str] | None = None) -> ArrayRecord:
    keys = list(order) if order is not None else sorted(shared)
    return ArrayRecord({k: Array(np.ascontiguousarray(
        torch.as_tensor(shared[k]).detach().cpu().numpy())) for k in keys})


def _from_arrayrecord(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in record.items()}


# ============================================================================== ClientApp
_SITE_MEMO: "OrderedDict[tuple, tuple[str, Any]]" = OrderedDict()


class _SiteSession:
    """One message's view of a site: rebuild (or reuse), restore, act, persist."""

    def __init__(self, msg: Message, context: Context):
        self.msg = msg
        self.context = context
        self.cfg = FLConfig.from_run_config(context.run_config)
        self.site_cfg = site_config_from_node(context.node_config, self.cfg)
        self.name = self.site_cfg.name
        run_dir = self.site_cfg.run_dir or self.cfg.run_dir
        self.ckpt_dir = site_checkpoint_dir(run_dir, self.cfg.run_name, self.cfg.fold, self.name)
        self.memo_key = (context.run_id, context.node_id, self.name, self.cfg.run_name,
                         self.cfg.fold)
        self.site = None

    # -- state ---------------------------------------------------------------------------
    def _context_state(self) -> tuple[int, str, str] | None:
        st = self.context.state
        if STATE_RECORD not in st:
            return None
        rec = st[STATE_RECORD]
        if (rec["site"], rec["run-name"], int(rec["fold"])) != (self.name, self.cfg.run_name,
                                                                self.cfg.fold):
            raise ValueError(f"Site {self.name!r}: this node's state belongs to site "
                             f"{rec['site']!r}, run {rec['run-name']!r}, fold {rec['fold']}.")
        return int(rec["server-round"]), str(rec["phase"]), str(rec["token"])

    def restore(self, *, at_most: int, exact: int | None = None) -> tuple[int, str]:
        """Build the site and restore its newest state from round <= ``at_most``.

        ``exact``: the round a disk checkpoint must have when ``context.state`` is empty (a
        resumed run); rounds before it are accepted only as a re-joining site.
        Returns (server round of the state, phase) with (0, "init") for a fresh site.
        """
        with _LOCK:
            cached = _SITE_MEMO.pop(self.memo_key, None) if self.cfg.site_cache else None
        st = self._context_state()
        if st is not None:
            r, phase, token = st
            if r > at_most:
                raise ValueError(f"Site {self.name!r} holds the state of round {r} ({phase}) "
                                 f"but was asked for round {at_most + 1}.")
            if cached is not None and cached[0] == token:
                self.site = cached[1]
            else:
                self.site = build_site(self.site_cfg, self.cfg)
                self.site.load_bytes(bytes(self.context.state[STATE_RECORD]["blob"]))
            return r, phase
        self.site = build_site(self.site_cfg, self.cfg)
        saved = [r for r in _saved_rounds(self.ckpt_dir) if r <= at_most]
        if not saved:
            if exact not in (None, 0) or (self.cfg.resume and at_most > 0):
                raise FileNotFoundError(
                    f"Site {self.name!r}: resuming at round {at_most + 1} needs its checkpoint "
                    f"of round {at_most} in {str(self.ckpt_dir)!r}; there is none (was "
                    f"run-dir moved, or the run name / fold changed?).")
            if _saved_rounds(self.ckpt_dir) and not self.cfg.resume:
                raise FileExistsError(
                    f"Site {self.name!r}: {str(self.ckpt_dir)!r} already holds checkpoints of "
                    f"run {self.cfg.run_name!r} fold {self.cfg.fold}; set resume=true or use "
                    f"another run-name (outputs are never overwritten).")
            return 0, "init"
        r = saved[-1]
        if exact is not None and r != exact:
            log(WARNING, "site %r: no checkpoint of round %d; re-joining from round %d",
                self.name, exact, r)
        self.site.load(_round_file(self.ckpt_dir, r))
        return r, "evaluate"

    def persist(self, server_round: int, phase: str, *, checkpoint: bool) -> None:
        token = uuid.uuid4().hex
        self.context.state[STATE_RECORD] = ConfigRecord({
            "blob": self.site.to_bytes(), "token": token, "server-round": int(server_round),
            "phase": phase, "site": self.name, "run-name": self.cfg.run_name,
            "fold": int(self.cfg.fold)})
        if checkpoint:
            self.site.save(_round_file(self.ckpt_dir, server_round))
            _prune(self.ckpt_dir, self.cfg.keep_checkpoints)
        if self.cfg.site_cache:
            with _LOCK:
                _SITE_MEMO[self.memo_key] = (token, self.site)
                while len(_SITE_MEMO) > self.cfg.site_cache:
                    _SITE_MEMO.popitem(last=False)

    def site_record(self, *, signature: bool = False) -> ConfigRecord:
        rec: dict[str, Any] = {"name": self.name}
        if signature:
            rec["signature"] = self.site.signature
        return ConfigRecord(rec)

    def fault(self, server_round: int) -> None:
        if not self.site_cfg.fault:
            return
        kind, seconds, at = _parse_fault(self.site_cfg.fault, self.name)
        if at != server_round:
            return
        if kind == "raise":
            raise RuntimeError(f"fault drill: site {self.name!r} raises in round {at}")
        if kind == "hang":  # a site that stops answering (and gives up after `seconds`)
            time.sleep(seconds)
            raise RuntimeError(f"fault drill: site {self.name!r} hung for {seconds:g} s in "
                               f"round {at}")
        if kind == "exit":  # pragma: no cover - ends the process
            os._exit(3)
        if kind == "kill":  # pragma: no cover - what kill -9 or the OOM killer does
            os.kill(os.getpid(), signal.SIGKILL)


def _guarded(fn: Callable[[_SiteSession], Message], phase: str, msg: Message,
             context: Context) -> Message:
    """Run a handler; any exception becomes one that names the site and the phase."""
    try:
        session = _SiteSession(msg, context)
    except Exception as err:
        nc = dict(context.node_config)
        who = nc.get("site", f"partition {nc['partition-id']}" if "partition-id" in nc
                     else f"node {context.node_id}")
        raise RuntimeError(f"[site {who}] {phase}: {type(err).__name__}: {err}") from err
    try:
        return fn(session)
    except Exception as err:
        with _LOCK:
            _SITE_MEMO.pop(session.memo_key, None)
        raise RuntimeError(f"[site {session.name}] {phase}: {type(err).__name__}: "
                           f"{err}") from err


# module-level handlers (Ray pickles the ClientApp: these go by reference, not by value)
def handle_train(msg: Message, context: Context) -> Message:
    """ClientApp ``train``: merge, one local epoch, reply shared tensors + metrics."""
    return _guarded(_client_train, "train", msg, context)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """ClientApp ``evaluate``: merge the aggregate, validate, keep the best snapshot."""
    return _guarded(_client_evaluate, "evaluate", msg, context)


def handle_test(msg: Message, context: Context) -> Message:
    """ClientApp ``query``: test metrics of the selected snapshot."""
    return _guarded(_client_test, "test", msg, context)


def handle_identify(msg: Message, context: Context) -> Message:
    """ClientApp ``query.identify``: site name, shared signature, classes, training trials."""
    return _guarded(_client_identify, "identify", msg, context)


def _client_identify(s: _SiteSession) -> Message:
    s._context_state()  # a node whose state belongs to another site/run/fold is refused
    s.site = build_site(s.site_cfg, s.cfg)
    n_out = int(s.site.model.n_outputs) if hasattr(s.site.model, "n_outputs") else \
        int(s.site.data.n_outputs)
    return Message(RecordDict({
        METRICS_RECORD: MetricRecord({"num-examples": int(s.site.n_train), "n-outputs": n_out}),
        SITE_RECORD: s.site_record(signature=True)}), reply_to=s.msg)


def _client_train(s: _SiteSession) -> Message:
    t0 = time.perf_counter()
    config = s.msg.content[CONFIG_RECORD]
    r = int(config["server-round"])
    s.fault(r)
    s.restore(at_most=r - 1, exact=r - 1)
    incoming = s.msg.content[SHARED_RECORD]
    order = list(incoming.keys())
    if set(order) != set(s.site.keys):
        raise ValueError(f"the server sent shared keys {sorted(order)}; this site shares "
                         f"{sorted(s.site.keys)} (different model or number of classes).")
    shared = _from_arrayrecord(incoming)
    if s.cfg.local_only and s.site.round > 0:
        shared = None  # local-only: the broadcast is merged once, before the first epoch
    mu = float(config.get("proximal-mu", 0.0))
    if mu != s.cfg.fedprox_mu:
        raise ValueError(f"the server sent proximal-mu={mu} but the run config has "
                         f"fedprox-mu={s.cfg.fedprox_mu}.")
    t1 = time.perf_counter()
    # FedProx: the proximal term of Site (0: plain FedAvg training, bit for bit)
    out_shared, n, metrics = s.site.train_round(shared, prox_mu=mu)
    compute = time.perf_counter() - t1
    s.persist(r, "train", checkpoint=False)
    if s.cfg.site_weights == "total":  # official weights: the site's total trials, a constant
        n = s.site.data.n_trials
    reply = RecordDict({
        SHARED_RECORD: _to_arrayrecord(out_shared, order),
        METRICS_RECORD: MetricRecord({"num-examples": int(n),
                                      "train-loss": float(metrics["train-loss"]),
                                      "compute-s": float(compute),
                                      "handler-s": float(time.perf_counter() - t0)}),
        SITE_RECORD: s.site_record(signature=True)})
    return Message(reply, reply_to=s.msg)


def _client_evaluate(s: _SiteSession) -> Message:
    t0 = time.perf_counter()
    config = s.msg.content[CONFIG_RECORD]
    r = int(config["server-round"])
    s.restore(at_most=r)
    shared = None if s.cfg.local_only else _from_arrayrecord(s.msg.content[SHARED_RECORD])
    t1 = time.perf_counter()
    m = s.site.evaluate(shared)
    compute = time.perf_counter() - t1
    s.persist(r, "evaluate", checkpoint=True)
    return Message(RecordDict({
        METRICS_RECORD: MetricRecord({"num-examples": int(m["num-examples"]),
                                      "val-loss": float(m["val-loss"]),
                                      "val-acc": float(m["val-acc"]),
                                      "compute-s": float(compute),
                                      "handler-s": float(time.perf_counter() - t0)}),
        SITE_RECORD: s.site_record()}), reply_to=s.msg)


def _client_test(s: _SiteSession) -> Message:
    s.restore(at_most=10 ** 9)
    m = s.site.test()
    best = s.site.best_round
    return Message(RecordDict({
        METRICS_RECORD: MetricRecord({"num-examples": int(m["num-examples"]),
                                      "test-acc": float(m["test-acc"]),
                                      "test-loss": float(m["test-loss"]),
                                      "best-round": int(best) if best is not None else -1}),
        SITE_RECORD: s.site_record()}), reply_to=s.msg)


def _describe(msg: Message) -> dict[str, Any]:
    """The structure of a message (what the audit log keeps)."""
    out: dict[str, Any] = {"type": msg.metadata.message_type, "time": time.time()}
    if msg.has_error():
        out["error"] = msg.error.reason
        return out
    content = msg.content
    out["arrays"] = {name: {k: [list(a.shape), a.dtype] for k, a in rec.items()}
                     for name, rec in content.array_records.items()}
    out["metrics"] = {name: dict(rec) for name, rec in content.metric_records.items()}
    out["configs"] = {name: {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v)
                             for k, v in rec.items()}
                      for name, rec in content.config_records.items()}
    out["bytes"] = int(sum(rec.count_bytes() for rec in content.array_records.values()))
    return out


def audit_mod(msg: Message, context: Context, call_next) -> Message:
    """Client mod: with run config ``audit = true``, append the structure of every message the
    site sends to ``<site checkpoint folder>/sent.jsonl`` (the privacy audit reads it)."""
    reply = call_next(msg, context)
    try:
        cfg = FLConfig.from_run_config(context.run_config)
    except (TypeError, ValueError):
        return reply
    if cfg.audit:
        try:
            site = site_config_from_node(context.node_config, cfg)
        except Exception:  # the handler already failed and said why
            return reply
        folder = site_checkpoint_dir(site.run_dir or cfg.run_dir, cfg.run_name, cfg.fold,
                                     site.name)
        folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"site": site.name, **_describe(reply)}, default=str)
        with open(folder / "sent.jsonl", "a") as fh:
            fh.write(line + "\n")
    return reply


def optional_clipping_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``fixedclipping_mod`` on train messages that carry a clipping norm (sent by
    :class:`FleegDPFixedClipping`); every other message passes untouched."""
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    if (msg.metadata.message_type == MessageType.TRAIN and CONFIG_RECORD in msg.content
            and KEY_CLIPPING_NORM in msg.content[CONFIG_RECORD]):
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def make_client_app(extra_mods: Sequence[Callable] = ()) -> ClientApp:
    """The FLEEG ClientApp: ``train``, ``evaluate``, ``query`` (test) and ``query.identify``.

    Mods: ``extra_mods`` (outermost), :func:`audit_mod` (so that it sees what actually leaves)
    and :func:`optional_clipping_mod` (Flower's client-side fixed clipping when DP is on).
    """
    app = ClientApp(mods=[*extra_mods, audit_mod, optional_clipping_mod])
    app.train()(handle_train)
    app.evaluate()(handle_evaluate)
    app.query()(handle_test)
    app.query("identify")(handle_identify)
    return app


# ============================================================================== ServerApp
_REASON_RE = re.compile(r"\[site ([^\]]+)\] (.*)", re.S)


_WRAPPED_RE = re.compile(r"<class '([\w.]+)'>:<'(.*)'>\s*$", re.S)


def _reason(text: str) -> tuple[str | None, str]:
    """(site, message) from a Flower error reason: the site named by a bcikit handler
    (``[site X] phase: Error: ...``), or None and the first line of another error (a ClientApp
    process that died, a node that became unavailable)."""
    text = text or ""
    m = _REASON_RE.search(text)
    if m:
        return m.group(1), re.sub(r"'>\s*$", "", m.group(2).strip()).strip()
    w = _WRAPPED_RE.match(text.strip())
    if w:
        first = (w.group(2).strip().splitlines() or [""])[0]
        return None, f"{w.group(1).rsplit('.', 1)[-1]}: {first}"
    lines = text.strip().splitlines()
    return None, lines[0] if lines else "no reason given"


class FleegStrategy(FedAvg):
    """FedAvg over the shared tensors that names failed sites and never waits forever.

    Aggregation is :func:`bcikit.federated.fedavg` (float64 accumulation, the in-process
    reference's arithmetic) with weights from ``num-examples`` (``weighting="samples"``) or
    equal weights; metrics are Flower's weighted averages. ``proximal_mu > 0`` adds FedProx's
    ``proximal-mu`` to the train config, as :class:`flwr.serverapp.strategy.FedProx` does.

    Parameters
    ----------
    node_sites : dict
        Node id -> site name (from the ``query.identify`` round).
    min_sites : int
        Fewest valid replies for a round to complete.
    weighting : {"samples", "equal"}
    proximal_mu : float
    signature : str
        The shared signature every site must send.
    round_offset : int
        Rounds done before this run (resume): Flower's round ``i`` is round
        ``round_offset + i``.
    node_wait_timeout, reply_timeout : float
        Seconds to wait for sites to connect, and the reply timeout (for messages).
    on_round : callable or None
        ``on_round(round, arrays, record)`` after each round's evaluation (checkpoints).
    """

    def __init__(self, *, node_sites: Mapping[int, str], min_sites: int,
                 weighting: str = "samples", proximal_mu: float = 0.0, signature: str = "",
                 round_offset: int = 0, node_wait_timeout: float = 120.0,
                 reply_timeout: float = 3600.0,
                 on_round: Callable[[int, ArrayRecord, dict], None] | None = None):
        super().__init__(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=min_sites,
                         min_evaluate_nodes=min_sites, min_available_nodes=min_sites,
                         weighted_by_key="num-examples")
        check_option(weighting, ("samples", "equal"), "weighting", owner="FleegStrategy")
        self.node_sites = dict(node_sites)
        self.min_sites = int(min_sites)
        self.weighting = weighting
        self.proximal_mu = float(proximal_mu)
        self.signature = signature
        self.round_offset = int(round_offset)
        self.node_wait_timeout = float(node_wait_timeout)
        self.reply_timeout = float(reply_timeout)
        self.on_round = on_round
        self.history: dict[int, dict[str, Any]] = {}
        self._sent: dict[tuple[str, int], list[int]] = {}
        self._checked: dict[tuple[str, int], list[Message]] = {}
        self._arrays: ArrayRecord | None = None
        self._t0: dict[int, float] = {}

    def summary(self) -> None:
        log(INFO, "\t├──> bcikit FLEEG: %d site(s) %s, min-sites %d, weighting %s%s",
            len(self.node_sites), sorted(self.node_sites.values()), self.min_sites,
            self.weighting,
            f", FedProx mu {self.proximal_mu}" if self.proximal_mu else "")
        super().summary()

    # -- nodes -----------------------------------------------------------------------------
    def site_name(self, node_id: int) -> str:
        return self.node_sites.get(node_id, f"<unknown node {node_id}>")

    def _nodes(self, grid: Grid) -> list[int]:
        deadline = time.monotonic() + self.node_wait_timeout
        while True:
            connected = set(grid.get_node_ids())
            nodes = sorted(n for n in self.node_sites if n in connected)
            if len(nodes) >= self.min_sites:
                return nodes
            if time.monotonic() >= deadline:
                gone = sorted(self.site_name(n) for n in self.node_sites if n not in connected)
                raise SiteFailure(f"Only {len(nodes)} of {len(self.node_sites)} sites are "
                                  f"connected after {self.node_wait_timeout:g} s (min-sites "
                                  f"{self.min_sites}); not connected: {gone}.")
            time.sleep(0.5)

    def _messages(self, phase: str, r: int, arrays: ArrayRecord, config: ConfigRecord,
                  grid: Grid, message_type: str) -> list[Message]:
        nodes = self._nodes(grid)
        self._sent[(phase, r)] = nodes
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return list(self._construct_messages(record, nodes, message_type))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        r = server_round + self.round_offset
        self._t0[r] = time.perf_counter()
        config["server-round"] = r
        if self.proximal_mu > 0:
            config["proximal-mu"] = self.proximal_mu
        msgs = self._messages("train", r, arrays, config, grid, MessageType.TRAIN)
        log(INFO, "round %d: train on %d site(s)", r, len(msgs))
        return msgs

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        r = server_round + self.round_offset
        config["server-round"] = r
        self._arrays = arrays
        return self._messages("evaluate", r, arrays, config, grid, MessageType.EVALUATE)

    # -- failures ----------------------------------------------------------------------------
    def check_replies(self, phase: str, r: int, replies: Iterable[Message]) -> list[Message]:
        """Valid replies of a round; failed or silent sites are named, and the round stops
        (:class:`SiteFailure`) when fewer than ``min_sites`` replied."""
        key = (phase, r)
        if key in self._checked:
            return self._checked[key]
        replies = list(replies)
        sent = self._sent.get(key, [])
        by_node = {m.metadata.src_node_id: m for m in replies}
        problems, failed = [], []
        valid = []
        for m in replies:
            node = m.metadata.src_node_id
            if m.has_error():
                who, why = _reason(m.error.reason)
                name = self.site_name(node)
                problems.append(f"site {name!r} failed: {why}")
                failed.append(name)
                continue
            content = m.content
            if SITE_RECORD in content and content[SITE_RECORD].get("name") != \
                    self.node_sites.get(node, content[SITE_RECORD].get("name")):
                problems.append(f"node {node} answered as site {content[SITE_RECORD]['name']!r}"
                                f" but identified as {self.site_name(node)!r}")
                failed.append(self.site_name(node))
                continue
            valid.append(m)
        for node in sent:
            if node not in by_node:
                name = self.site_name(node)
                problems.append(f"site {name!r} did not reply within {self.reply_timeout:g} s")
                failed.append(name)
        rec = self.history.setdefault(r, {"round": r, "sites": {}})
        if problems:
            rec.setdefault("failed", {})[phase] = sorted(failed)
            text = f"round {r} ({phase}): " + "; ".join(problems)
            if len(valid) < self.min_sites:
                raise SiteFailure(f"{text}. {len(valid)} of {len(sent)} site(s) replied and "
                                  f"min-sites is {self.min_sites}: the run stops.")
            log(WARNING, "%s. The round goes on with %d of %d site(s) (min-sites %d).", text,
                len(valid), len(sent), self.min_sites)
        self._checked[key] = valid
        return valid

    # -- aggregation -------------------------------------------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        from .state import check_signatures, fedavg, fedavg_weights

        r = server_round + self.round_offset
        # sum in site-name order: the aggregate does not depend on the order replies arrive in
        valid = sorted(self.check_replies("train", r, replies),
                       key=lambda m: self.site_name(m.metadata.src_node_id))
        contents = [m.content for m in valid]
        names = [self.site_name(m.metadata.src_node_id) for m in valid]
        sigs = {}
        for name, c in zip(names, contents):
            if SITE_RECORD not in c or "signature" not in c[SITE_RECORD]:
                raise ValueError(f"round {r}: site {name!r} sent no shared signature.")
            sigs[name] = str(c[SITE_RECORD]["signature"])
        if self.signature:
            sigs["<server>"] = self.signature
        check_signatures(sigs)
        keys = None
        updates = []
        for name, c in zip(names, contents):
            if len(c.array_records) != 1 or len(c.metric_records) != 1:
                raise ValueError(f"round {r}: site {name!r} sent {len(c.array_records)} array "
                                 f"and {len(c.metric_records)} metric record(s); expected one "
                                 f"of each.")
            arrays = next(iter(c.array_records.values()))
            if keys is None:
                keys = list(arrays.keys())
            elif set(arrays.keys()) != set(keys):
                raise ValueError(f"round {r}: site {name!r} sent keys {sorted(arrays.keys())}; "
                                 f"the others sent {sorted(keys)}.")
            n = int(next(iter(c.metric_records.values()))["num-examples"])
            updates.append((_from_arrayrecord(arrays), n))
        order = sorted(keys or [])
        aggregated = fedavg(updates, weighting=self.weighting)
        weights = fedavg_weights([n for _, n in updates], weighting=self.weighting)
        metrics = aggregate_metricrecords(contents, self.weighted_by_key)
        rec = self.history.setdefault(r, {"round": r, "sites": {}})
        upload = 0
        for name, c, w in zip(names, contents, weights):
            m = dict(next(iter(c.metric_records.values())))
            nbytes = int(next(iter(c.array_records.values())).count_bytes())
            upload += nbytes
            rec["sites"].setdefault(name, {}).update(
                {"train-loss": m["train-loss"], "num-examples": m["num-examples"],
                 "weight": w, "upload-bytes": nbytes, "compute-s": m.get("compute-s"),
                 "handler-s": m.get("handler-s")})
        rec["upload-bytes"] = upload
        log(INFO, "round %d: weights %s", r,
            {n: round(w, 4) for n, w in zip(names, weights)})
        return _to_arrayrecord(aggregated, order), metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        r = server_round + self.round_offset
        valid = self.check_replies("evaluate", r, replies)
        contents = [m.content for m in valid]
        metrics = self.evaluate_metrics_aggr_fn(contents, self.weighted_by_key) if valid else None
        rec = self.history.setdefault(r, {"round": r, "sites": {}})
        for m in valid:
            name = self.site_name(m.metadata.src_node_id)
            mm = dict(next(iter(m.content.metric_records.values())))
            rec["sites"].setdefault(name, {}).update(
                {"val-loss": mm["val-loss"], "val-acc": mm["val-acc"],
                 "eval-compute-s": mm.get("compute-s"), "eval-handler-s": mm.get("handler-s")})
        if r in self._t0:
            rec["wall-s"] = time.perf_counter() - self._t0[r]
        if self.on_round is not None and self._arrays is not None:
            self.on_round(r, self._arrays, rec)
        return metrics


class FleegDPFixedClipping(DifferentialPrivacyClientSideFixedClipping):
    """Flower's central DP with client-side fixed clipping around :class:`FleegStrategy`.

    The sites clip their shared-tensor update (Flower's ``fixedclipping_mod``, applied by
    :func:`optional_clipping_mod`), the server adds Gaussian noise of standard deviation
    ``noise_multiplier * clipping_norm / n_sites`` to the average. Only the shared tensors are
    covered: local tensors never leave a site. Failed sites are handled by the inner strategy
    (named, ``min-sites``) before Flower's wrapper sees the replies, so a failure is never
    silently turned into a skipped round.
    """

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        inner: FleegStrategy = self.strategy  # type: ignore[assignment]
        valid = inner.check_replies("train", server_round + inner.round_offset, replies)
        self.num_sampled_clients = max(len(valid), 1)
        return super().aggregate_train(server_round, valid)


def _identify(grid: Grid, cfg: FLConfig, n_sites: int, min_sites: int
              ) -> tuple[dict[int, str], str, int, dict[str, dict]]:
    """Wait for the sites, ask each for its name and signature (``query.identify``)."""
    deadline = time.monotonic() + cfg.node_wait_timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n_sites:
            break
        if time.monotonic() >= deadline:
            if len(nodes) >= min_sites:
                log(WARNING, "only %d of %d site(s) connected after %g s; going on (min-sites "
                    "%d)", len(nodes), n_sites, cfg.node_wait_timeout, min_sites)
                break
            raise SiteFailure(f"Only {len(nodes)} of {n_sites} site(s) connected after "
                              f"{cfg.node_wait_timeout:g} s (min-sites {min_sites}).")
        time.sleep(0.5)
    msgs = [Message(RecordDict({CONFIG_RECORD: ConfigRecord({"fold": cfg.fold})}),
                    dst_node_id=n, message_type=QUERY_IDENTIFY) for n in nodes]
    replies = list(grid.send_and_receive(msgs, timeout=cfg.round_timeout))
    node_sites: dict[int, str] = {}
    info: dict[str, dict] = {}
    sigs: dict[str, str] = {}
    n_out: dict[str, int] = {}
    problems = []
    got = set()
    for m in replies:
        node = m.metadata.src_node_id
        got.add(node)
        if m.has_error():
            who, why = _reason(m.error.reason)
            problems.append(f"site {who or f'on node {node}'!r} failed to set up: {why}")
            continue
        name = str(m.content[SITE_RECORD]["name"])
        if name in info:
            raise ValueError(f"Two nodes answer as site {name!r}; site names must be unique.")
        node_sites[node] = name
        sigs[name] = str(m.content[SITE_RECORD]["signature"])
        mm = m.content[METRICS_RECORD]
        n_out[name] = int(mm["n-outputs"])
        info[name] = {"n-train": int(mm["num-examples"]), "n-outputs": int(mm["n-outputs"])}
    for node in nodes:
        if node not in got:
            problems.append(f"node {node} did not answer the set-up query within "
                            f"{cfg.round_timeout:g} s")
    if problems:
        text = "set-up: " + "; ".join(problems)
        if len(node_sites) < min_sites:
            raise SiteFailure(f"{text}. {len(node_sites)} of {len(nodes)} site(s) are ready and "
                              f"min-sites is {min_sites}: the run stops.")
        log(WARNING, "%s; going on with %d site(s).", text, len(node_sites))
    if not node_sites:
        raise SiteFailure("No site answered the set-up query.")
    from .state import check_signatures

    signature = check_signatures(sigs)
    outs = set(n_out.values())
    if len(outs) != 1:
        raise ValueError(f"The sites have different numbers of classes: {n_out}.")
    log(INFO, "sites: %s", {node_sites[n]: n for n in sorted(node_sites)})
    return node_sites, signature, outs.pop(), info


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


def read_server_result(run_dir: str | os.PathLike, run_name: str = "fleeg", fold: int = 0
                       ) -> dict[str, Any]:
    """The ``result.json`` a ServerApp wrote (``status`` is ``running``, ``stopped``,
    ``completed`` or ``failed``; ``error`` says why a run failed)."""
    path = fold_dir(run_dir, run_name, fold) / "server" / "result.json"
    if not path.exists():
        raise FileNotFoundError(f"No server result at {str(path)!r}: the ServerApp did not "
                                f"start (see the Flower log).")
    return json.loads(path.read_text())


class PollingGrid:
    """A Grid whose ``send_and_receive`` polls for replies every ``interval`` seconds, growing
    by half each time up to ``max_interval``, instead of Flower's fixed 3 s sleep.

    With Flower's grid every message round (train, evaluate, the queries) waits at least 3 s
    after its last reply has arrived; a 250-round run has 500 such rounds. Every other attribute
    is the wrapped grid's. Semantics are Flower's: push the messages, then pull replies until
    all have come or ``timeout`` seconds have passed (None: wait for all).
    """

    def __init__(self, grid: Grid, *, interval: float = 0.05, max_interval: float = 1.0):
        self._grid = grid
        self._interval = float(interval)
        self._max_interval = float(max_interval)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        pending = set(self._grid.push_messages(list(messages)))
        end = None if timeout is None else time.monotonic() + timeout
        wait = self._interval
        replies: list[Message] = []
        while pending:
            got = list(self._grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending:
                break
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            time.sleep(wait if left is None else min(wait, left))
            wait = min(wait * 1.5, self._max_interval)
        return replies


def server_main(grid: Grid, context: Context) -> dict[str, Any]:
    """The ServerApp's body: identify sites, run the rounds, collect test metrics.

    Writes ``<run-dir>/<run-name>/fold-<k>/server/result.json`` (``status``, per-site test
    metrics, per-round history with weights, losses, failures, upload bytes and wall time) and a
    checkpoint ``round-<r>.pt`` after each round. Returns the result dict.
    """
    from ..train.checkpoint import load_checkpoint, save_checkpoint
    from .state import initial_shared, shared_signature

    cfg = FLConfig.from_run_config(context.run_config)
    if not isinstance(grid, InProcessGrid):  # Flower's grids sleep 3 s between reply pulls
        grid = PollingGrid(grid)  # type: ignore[assignment]
    out = server_dir(cfg)
    result_path = out / "result.json"
    result: dict[str, Any] = {"status": "running", "run-name": cfg.run_name, "fold": cfg.fold,
                              "config": cfg.to_run_config(), "history": [], "sites": {}}
    t_start = time.perf_counter()
    try:
        saved = _saved_rounds(out)
        if cfg.resume:
            if not saved:
                raise FileNotFoundError(f"resume=true but {str(out)!r} holds no server "
                                        f"checkpoint of run {cfg.run_name!r} fold {cfg.fold}.")
        elif saved or (result_path.exists() and json.loads(result_path.read_text()).get(
                "status") != "failed"):
            # a run that failed before its first round left nothing to keep: it may be redone
            raise FileExistsError(f"{str(out)!r} already holds run {cfg.run_name!r} fold "
                                  f"{cfg.fold}; set resume=true to continue it or choose another "
                                  f"run-name (outputs are never overwritten).")
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(result_path, json.dumps(result, indent=1, default=_json_default))
        if cfg.num_sites:
            n_sites = cfg.num_sites
        else:
            n_sites = len(parse_sites(cfg.sites))
        min_sites = cfg.min_sites or n_sites
        if min_sites > n_sites:
            raise ValueError(f"min-sites ({min_sites}) exceeds the number of sites ({n_sites}).")
        node_sites, signature, n_outputs, info = _identify(grid, cfg, n_sites, min_sites)
        result["signature"] = signature
        result["site-info"] = info
        history: list[dict[str, Any]] = []
        if cfg.resume:
            state = load_checkpoint(_round_file(out, saved[-1]))
            offset = int(state["round"])
            arrays = _to_arrayrecord(state["shared"])
            history = list(state["history"])
            if offset >= cfg.num_rounds:
                raise ValueError(f"Run {cfg.run_name!r} fold {cfg.fold} already finished all "
                                 f"{cfg.num_rounds} rounds.")
            log(INFO, "resuming run %r fold %d after round %d", cfg.run_name, cfg.fold, offset)
        else:
            offset = 0
            init = initial_shared(n_outputs, seed=cfg.seed)
            if shared_signature(init) != signature:
                raise ValueError("The server's initial FLEEGNet shared tensors do not match the "
                                 "sites' shared signature (another model at the sites?).")
            arrays = _to_arrayrecord(init)
        last = cfg.stop_after or cfg.num_rounds
        if last <= offset:
            raise ValueError(f"stop-after={cfg.stop_after} is not after the checkpoint round "
                             f"{offset}.")

        def on_round(r: int, arr: ArrayRecord, rec: dict) -> None:
            history.append(rec)
            shared = {k: torch.from_numpy(np.array(v.numpy(), copy=True))
                      for k, v in arr.items()}
            save_checkpoint({"round": r, "shared": shared, "history": history},
                            _round_file(out, r))
            _prune(out, cfg.keep_checkpoints)
            result["history"] = history
            result["round"] = r
            _atomic_write_text(result_path, json.dumps(result, indent=1,
                                                       default=_json_default))

        strategy = FleegStrategy(node_sites=node_sites, min_sites=min_sites,
                                 weighting=cfg.weighting, proximal_mu=cfg.fedprox_mu,
                                 signature=signature, round_offset=offset,
                                 node_wait_timeout=cfg.node_wait_timeout,
                                 reply_timeout=cfg.round_timeout, on_round=on_round)
        top = strategy
        if cfg.dp_clipping_norm > 0:
            top = FleegDPFixedClipping(strategy, cfg.dp_noise_multiplier, cfg.dp_clipping_norm,
                                       len(node_sites))
        res = top.start(grid=grid, initial_arrays=arrays, num_rounds=last - offset,
                        timeout=cfg.round_timeout, train_config=ConfigRecord(),
                        evaluate_config=ConfigRecord())
        result["round"] = last
        result["history"] = history
        if res.arrays is not None and len(res.arrays):
            np.savez(out / "shared.npz", **{k: v.numpy() for k, v in res.arrays.items()})
        if last < cfg.num_rounds:
            result["status"] = "stopped"
            log(INFO, "stopped after round %d of %d (stop-after); resume with resume=true",
                last, cfg.num_rounds)
        else:
            nodes = strategy._nodes(grid)
            msgs = [Message(RecordDict({CONFIG_RECORD: ConfigRecord({"fold": cfg.fold})}),
                            dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
            strategy._sent[("test", last)] = nodes
            replies = grid.send_and_receive(msgs, timeout=cfg.round_timeout)
            valid = strategy.check_replies("test", last, replies)
            for m in valid:
                name = strategy.site_name(m.metadata.src_node_id)
                result["sites"][name] = {**dict(m.content[METRICS_RECORD]),
                                         **info.get(name, {})}
            result["status"] = "completed"
            log(INFO, "test accuracy per site: %s",
                {n: round(v["test-acc"], 4) for n, v in sorted(result["sites"].items())})
        result["wall-s"] = time.perf_counter() - t_start
        _atomic_write_text(result_path, json.dumps(result, indent=1, default=_json_default))
        return result
    except BaseException as err:
        result["status"] = "failed"
        result["error"] = f"{err}" if isinstance(err, (SiteFailure, ValueError, TypeError,
                                                        FileNotFoundError, FileExistsError)) \
            else f"{type(err).__name__}: {err}"
        result["wall-s"] = time.perf_counter() - t_start
        # record the failure in this run's folder (never over another run's result)
        if out.is_dir() and not isinstance(err, FileExistsError):
            try:
                _atomic_write_text(result_path, json.dumps(result, indent=1,
                                                           default=_json_default))
            except OSError:  # pragma: no cover - a full or read-only disk
                pass
        raise


def make_server_app() -> ServerApp:
    """The FLEEG ServerApp (:func:`server_main`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        server_main(grid, context)

    return app


# ============================================================================== in-process grid
class InProcessGrid(Grid):
    """A Grid that delivers messages to ClientApps in this process (no SuperLink, no Ray).

    Each node has its own :class:`~flwr.app.Context` (``node_config``, ``state``), as a
    SuperNode would; contents are serialised to Flower's protobuf and back in both directions,
    so what a ClientApp receives and returns is what would cross the wire. Messages run one at a
    time, each in a worker thread; a message whose reply takes longer than the ``timeout`` of
    :meth:`send_and_receive` gets no reply (as with a real Grid; here the timeout applies to
    each message in turn).

    Used by the tests, the notebook and the benchmark; :func:`run_in_process` runs the ServerApp
    body against it.

    Parameters
    ----------
    client_app : ClientApp
    node_configs : list of dict
        One per node (e.g. ``{"partition-id": i, "num-partitions": n}``).
    run_config : dict
        The run config every node sees.
    """

    def __init__(self, client_app: ClientApp, node_configs: Sequence[Mapping[str, Any]],
                 run_config: Mapping[str, Any], *, run_id: int = 1):
        self.client_app = client_app
        self.run_config = dict(run_config)
        self._run = None
        self.contexts: dict[int, Context] = {}
        self.offline: set[int] = set()
        rng = np.random.default_rng(12345)
        for nc in node_configs:
            node_id = int(rng.integers(1, 2 ** 62))
            self.contexts[node_id] = Context(run_id=run_id, node_id=node_id,
                                             node_config=dict(nc), state=RecordDict(),
                                             run_config=dict(run_config))
        self.sent: list[tuple[int, Message]] = []  # every reply a node sent (after the wire)
        self.received: list[tuple[int, Message]] = []  # every message a node got
        self.bytes_down = 0
        self.bytes_up = 0
        self._pending: dict[str, Message] = {}
        self._replies: dict[str, Message] = {}

    # Grid API --------------------------------------------------------------------------------
    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.offline]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for m in messages:
            mid = uuid.uuid4().hex
            m.metadata.__dict__["_message_id"] = mid
            self._pending[mid] = m
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    @staticmethod
    def _wire(content: RecordDict) -> tuple[RecordDict, int]:
        from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

        proto = recorddict_to_proto(content)
        return recorddict_from_proto(proto), int(proto.ByteSize())

    def _deliver(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        content, nbytes = self._wire(msg.content)
        self.bytes_down += nbytes
        inbound = Message(content, dst_node_id=node, message_type=msg.metadata.message_type)
        inbound.metadata.__dict__["_message_id"] = msg.metadata.message_id
        inbound.metadata.__dict__["_src_node_id"] = msg.metadata.src_node_id
        self.received.append((node, inbound))
        try:
            reply = self.client_app(inbound, self.contexts[node])
        except Exception as err:  # what the SuperNode does with a raising ClientApp
            reply = Message(Error(code=2, reason=f"{type(err)}:<'{err}'>"), reply_to=inbound)
        if reply.has_content():
            content, nbytes = self._wire(reply.content)
            self.bytes_up += nbytes
            reply = Message(content, reply_to=inbound)
        self.sent.append((node, reply))
        return reply

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        ids = list(self.push_messages(messages))
        for mid in ids:
            msg = self._pending.pop(mid)
            if msg.metadata.dst_node_id in self.offline:
                continue
            box: dict[str, Message] = {}
            worker = threading.Thread(target=lambda m=msg, b=box: b.update(r=self._deliver(m)),
                                      daemon=True)
            worker.start()
            worker.join(timeout)
            if "r" in box:
                self._replies[mid] = box["r"]
        return self.pull_messages(ids)


def run_in_process(cfg: FLConfig | Mapping[str, Any], *, n_nodes: int | None = None,
                   node_configs: Sequence[Mapping[str, Any]] | None = None
                   ) -> tuple[dict[str, Any], InProcessGrid]:
    """Run the ServerApp body on an :class:`InProcessGrid` (the ClientApp in this process).

    Parameters
    ----------
    cfg : FLConfig or dict
        The run config (dashed keys for a dict).
    n_nodes : int or None
        Simulation-style nodes ``partition-id = 0..n-1`` (default: the number of sites).
    node_configs : list of dict or None
        Explicit node configs (deployment-style), instead of ``n_nodes``.

    Returns
    -------
    result : dict
        The server's ``result.json`` content.
    grid : InProcessGrid
        With every reply the sites sent (``grid.sent``) and byte counts.
    """
    if not isinstance(cfg, FLConfig):
        cfg = FLConfig.from_run_config(cfg)
    if node_configs is None:
        n = n_nodes if n_nodes is not None else len(parse_sites(cfg.sites))
        node_configs = [{"partition-id": i, "num-partitions": n} for i in range(n)]
    run_config = cfg.to_run_config()
    grid = InProcessGrid(make_client_app(), node_configs, run_config)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config=run_config)
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    try:
        result = server_main(grid, context)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    return result, grid
