"""Validated pipeline configuration (``pipelines/*.toml``).

A pipeline file is data: it is read once, checked field by field, and turned into a typed
:class:`PipelineConfig`. Every error names the file, the ``[section] field``, what was expected and
what came in, e.g.::

    pipelines/shallow.toml: [train] epochs must be an integer >= 1; got -3.

Sections
--------
``[pipeline]``   name, description, extends (a TOML file, relative to this one, whose tables this
                 file extends: values here win, tables are merged key by key; lets several
                 pipelines share one data/protocol setting)
``[data]``       simulator (the built-in data used when no dataset is given), ``[data.simulate]``
                 knobs for it, task (dataset-card task), classes (subset and order of labels),
                 subjects, window ([tmin, tmax] crop in seconds relative to the trial start),
                 download (let a dataset card fetch missing files; off by default)
``[preprocess]`` bandpass ([low, high] Hz), resample (Hz), alignment ("none" | "euclidean", per
                 subject), alignment_test (how a subject unseen in training is aligned:
                 "causal" running mean in recording order, "transductive" all its trials,
                 "fit" refuse), scale ("none" | "channel"), channels ("all" | "region" |
                 "contribution": intracranial channel selection, with regions and n_channels);
                 all fitted on training data only
``[model]``      name (a braindecode model, a bcikit model or a classical baseline), ``[model.params]``
``[train]``      epochs, batch_size, lr, optimizer, weight_decay, scheduler, patience, monitor,
                 device, precision, keep_on_device, grad_clip, recipe ("none" | "duin": the
                 Du-IN classifier recipe fills the fields not given and adds warmup_epochs,
                 lr_min), selection ("last" epoch | "best" validation epoch)
``[evaluate]``   protocol, ``[evaluate.params]`` (protocol options), seeds, metrics, oracle
                 (the motor-imagery simulator's oracle in metrics.json)
``[output]``     dir (parent of run folders), checkpoint (save the trained model)
``[pretrain]``   Du-IN pre-training (optional, ``[model] name = "DuIN"`` only): stages
                 (``[]``, ``["vqvae"]``, ``["vqvae", "mae"]``), stage ("all" | "pretrain" |
                 "finetune"), init (a run folder whose ``pretrain/`` checkpoints are reused),
                 source ("separate" recordings | "train_runs"), crop_seconds, epochs_vqvae,
                 epochs_mae, batch_size_vqvae, batch_size_mae, crops_per_segment, seed,
                 vqvae_params, mae_params (see :mod:`bcikit.pretrain`)
``[encoding]``   only in ``kind = "encoding"`` pipelines (encoding models of sEEG, see
                 :mod:`bcikit.encoding.pipeline`): models, alignments, signal, reference,
                 protocol, purge, n_boot, bootstrap, bootstrap_unit ("sentence": resample
                 whole sentences of word events, the default; "event": single events, the
                 spec's literal unit), bins, q, min_obs, device, seed

``[pipeline] kind`` is ``"decoding"`` (the default: trials -> labels, ``[model]`` required) or
``"encoding"`` (stimulus features -> neural responses; ``[encoding]`` instead of ``[model]``,
``[preprocess]``, ``[train]`` and ``[evaluate]``).
"""

from __future__ import annotations

import copy
import difflib
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SIMULATORS = ("motor_imagery", "movie_seeg", "seeg_words")
KINDS = ("decoding", "encoding")
#: which simulator each kind of pipeline can use
KIND_SIMULATORS = {"decoding": ("motor_imagery", "seeg_words"), "encoding": ("movie_seeg",)}
ENCODING_ALIGNMENTS = ("language", "vision")
ENCODING_SIGNALS = ("broadband", "zscore", "high_gamma", "despike")
ENCODING_REFERENCES = ("none", "car", "shaft_car", "laplacian", "bipolar")
ENCODING_PROTOCOLS = ("paper", "nested")
BOOTSTRAP_MODES = ("refit", "oof")
BOOTSTRAP_UNITS = ("sentence", "event")  # = bcikit.encoding.stats.BOOTSTRAP_UNITS
SCORE_BINS = ("shared", "own")
PROTOCOL_NAMES = ("chronological", "chronological_kfold", "kfold", "leave_one_run_out",
                  "cross_session", "leave_one_subject_out", "official_trials")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("none", "cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MONITORS = ("val_loss", "val_accuracy")
ALIGNMENTS = ("none", "euclidean")
ALIGNMENT_TEST_MODES = ("causal", "transductive", "fit")
SCALES = ("none", "channel")
CHANNEL_MODES = ("all", "region", "contribution")
RECIPES = ("none", "duin")
SELECTIONS = ("last", "best")
PRETRAIN_STAGES = ("vqvae", "mae")
PRETRAIN_RUN_STAGES = ("all", "pretrain", "finetune")
PRETRAIN_SOURCES = ("separate", "train_runs")
METRICS = ("accuracy", "balanced_accuracy", "cohen_kappa", "f1_macro", "roc_auc")


class ConfigError(ValueError):
    """A pipeline or dataset file holds a wrong type or value (names the file and the field)."""


# --------------------------------------------------------------------------- field checkers
def _describe(value: Any) -> str:
    return f"{value!r}" if not isinstance(value, str) else f"'{value}'"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def int_at_least(low: int):
    def check(v):
        return (_is_int(v) and v >= low), f"an integer >= {low}"
    return check


def num_above(low: float, *, inclusive: bool = False):
    def check(v):
        ok = _is_num(v) and (v >= low if inclusive else v > low)
        return ok, f"a number {'>=' if inclusive else '>'} {low}"
    return check


def one_of(options):
    def check(v):
        return v in options, "one of {" + ", ".join(repr(o) for o in options) + "}"
    return check


def optional(check_fn):
    def check(v):
        if v is None:
            return True, ""
        ok, what = check_fn(v)
        return ok, what + " (or omitted)"
    return check


def is_str(v):
    return isinstance(v, str), "a string"


def is_bool(v):
    return isinstance(v, bool), "true or false"


def is_table(v):
    return isinstance(v, dict), "a table"


def band(v):
    ok = (isinstance(v, list) and len(v) == 2 and all(_is_num(x) for x in v) and 0 <= v[0] < v[1])
    return ok, "a pair [low, high] of numbers with 0 <= low < high (Hz)"


def window(v):
    ok = isinstance(v, list) and len(v) == 2 and all(_is_num(x) for x in v) and v[0] < v[1]
    return ok, "a pair [tmin, tmax] of numbers with tmin < tmax (seconds)"


def list_of_str(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"


def list_of_int(v):
    return (isinstance(v, list) and len(v) > 0 and all(_is_int(x) for x in v)), \
        "a non-empty list of integers"


def non_empty_list_of_str(v):
    ok = isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) for x in v)
    return ok, "a non-empty list of strings"


def stage_list(v):
    ok = (isinstance(v, list) and all(x in PRETRAIN_STAGES for x in v) and len(set(v)) == len(v)
          and v in ([], ["vqvae"], ["vqvae", "mae"]))
    return ok, "[] (from scratch), [\"vqvae\"] or [\"vqvae\", \"mae\"]"


def subset_of(options):
    def check(v):
        ok = isinstance(v, list) and len(v) > 0 and all(x in options for x in v) \
            and len(set(v)) == len(v)
        return ok, f"a non-empty list of distinct values among {list(options)}"
    return check


def num_between(low: float, high: float):
    def check(v):
        return _is_num(v) and low < v < high, f"a number in ({low:g}, {high:g})"
    return check


def metric_list(v):
    ok = isinstance(v, list) and len(v) > 0 and all(x in METRICS for x in v)
    return ok, "a non-empty list drawn from {" + ", ".join(repr(m) for m in METRICS) + "}"


def device_str(v):
    ok = isinstance(v, str) and (v in ("auto", "cpu", "cuda", "mps") or
                                 (v.startswith("cuda:") and v[5:].isdigit()))
    return ok, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def keep_on_device(v):
    return v in ("auto", True, False), "'auto', true or false"


def F(check, default: Any = None, *, required: bool = False):  # noqa: N802 - reads like a schema
    """A schema field: ``check(value) -> (ok, what was expected)``."""
    return field(default_factory=lambda: copy.deepcopy(default),
                 metadata={"check": check, "required": required})


# --------------------------------------------------------------------------- sections
@dataclass
class PipelineSection:
    name: str = F(is_str, required=True)
    description: str = F(is_str, "")
    extends: str | None = F(optional(is_str))
    kind: str = F(one_of(KINDS), "decoding")


@dataclass
class DataSection:
    simulator: str = F(one_of(SIMULATORS), "motor_imagery")
    simulate: dict = F(is_table, {})
    task: str | None = F(optional(is_str))
    classes: list | None = F(optional(list_of_str))
    subjects: list | None = F(optional(list_of_str))
    window: list | None = F(optional(window))
    download: bool = F(is_bool, False)


@dataclass
class PreprocessSection:
    bandpass: list | None = F(optional(band))
    resample: float | None = F(optional(num_above(0)))
    alignment: str = F(one_of(ALIGNMENTS), "none")
    alignment_test: str = F(one_of(ALIGNMENT_TEST_MODES), "causal")
    scale: str = F(one_of(SCALES), "none")
    channels: str = F(one_of(CHANNEL_MODES), "all")
    regions: list = F(non_empty_list_of_str, ["vSMC", "STG"])
    n_channels: int = F(int_at_least(1), 10)


@dataclass
class ModelSection:
    name: str = F(is_str, required=True)
    params: dict = F(is_table, {})


@dataclass
class TrainSection:
    epochs: int = F(int_at_least(1), 100)
    batch_size: int = F(int_at_least(1), 64)
    lr: float = F(num_above(0), 1e-3)
    optimizer: str = F(one_of(OPTIMIZERS), "adamw")
    weight_decay: float = F(num_above(0, inclusive=True), 0.0)
    scheduler: str = F(one_of(SCHEDULERS), "none")
    patience: int | None = F(optional(int_at_least(1)))
    monitor: str = F(one_of(MONITORS), "val_loss")
    device: str = F(device_str, "auto")
    precision: str = F(one_of(PRECISIONS), "auto")
    keep_on_device: Any = F(keep_on_device, "auto")
    grad_clip: float | None = F(optional(num_above(0)))
    recipe: str = F(one_of(RECIPES), "none")
    selection: str = F(one_of(SELECTIONS), "last")
    warmup_epochs: int | None = F(optional(int_at_least(0)))
    lr_min: float | None = F(optional(num_above(0, inclusive=True)))


@dataclass
class EvaluateSection:
    protocol: str = F(one_of(PROTOCOL_NAMES), "chronological")
    params: dict = F(is_table, {})
    seeds: list = F(list_of_int, [0])
    metrics: list = F(metric_list, ["accuracy", "balanced_accuracy", "cohen_kappa"])
    # the motor-imagery simulator's oracle (bcikit.simulate.motor_imagery_oracle) in
    # metrics.json, and `bcikit compare` flags runs above it; ignored on recorded data
    oracle: bool = F(is_bool, False)


@dataclass
class OutputSection:
    dir: str = F(is_str, "runs")
    checkpoint: bool = F(is_bool, True)


@dataclass
class EncodingSection:
    models: list | None = F(optional(list_of_str))        # None: every model of the catalog
    alignments: list = F(subset_of(ENCODING_ALIGNMENTS), ["language", "vision"])
    signal: str = F(one_of(ENCODING_SIGNALS), "broadband")
    reference: str = F(one_of(ENCODING_REFERENCES), "none")
    protocol: str = F(one_of(ENCODING_PROTOCOLS), "paper")
    purge: bool = F(is_bool, True)
    n_boot: int = F(int_at_least(10), 1000)
    bootstrap: str = F(one_of(BOOTSTRAP_MODES), "refit")
    # "sentence" (default): word events of one sentence are resampled together (they share
    # features and overlapping windows; per-event resampling was anti-conservative, see
    # bcikit.encoding.stats.bootstrap_blocks); "event": the spec's literal per-event unit
    bootstrap_unit: str = F(one_of(BOOTSTRAP_UNITS), "sentence")
    bins: str = F(one_of(SCORE_BINS), "shared")
    q: float = F(num_between(0.0, 1.0), 0.05)
    min_obs: int = F(int_at_least(1), 10)
    device: str = F(device_str, "auto")
    seed: int = F(int_at_least(0), 0)


@dataclass
class PretrainSection:
    """Du-IN pre-training (``[pretrain]``; see :mod:`bcikit.pretrain`)."""

    stages: list = F(stage_list, ["vqvae", "mae"])
    stage: str = F(one_of(PRETRAIN_RUN_STAGES), "all")
    init: str | None = F(optional(is_str))
    source: str = F(one_of(PRETRAIN_SOURCES), "separate")
    crop_seconds: float = F(num_above(0), 4.0)
    epochs_vqvae: int = F(int_at_least(1), 400)
    epochs_mae: int = F(int_at_least(1), 400)
    batch_size_vqvae: int = F(int_at_least(1), 32)
    batch_size_mae: int = F(int_at_least(1), 64)
    crops_per_segment: int | None = F(optional(int_at_least(1)))
    seed: int = F(int_at_least(0), 0)
    vqvae_params: dict = F(is_table, {})
    mae_params: dict = F(is_table, {})


SECTIONS: dict[str, type] = {
    "pipeline": PipelineSection,
    "data": DataSection,
    "preprocess": PreprocessSection,
    "model": ModelSection,
    "train": TrainSection,
    "evaluate": EvaluateSection,
    "output": OutputSection,
    "encoding": EncodingSection,
    "pretrain": PretrainSection,
}
REQUIRED_SECTIONS = ("pipeline",)
#: the sections each kind of pipeline reads (the others are refused when present)
KIND_SECTIONS = {
    "decoding": ("pipeline", "data", "preprocess", "model", "train", "evaluate", "output",
                 "pretrain"),
    "encoding": ("pipeline", "data", "encoding", "output"),
}


@dataclass
class PipelineConfig:
    """A validated pipeline file. ``source`` is the file it came from (for messages)."""

    pipeline: PipelineSection
    data: DataSection
    preprocess: PreprocessSection | None
    model: ModelSection | None
    train: TrainSection | None
    evaluate: EvaluateSection | None
    output: OutputSection
    source: str = "<dict>"
    encoding: EncodingSection | None = None
    pretrain: PretrainSection | None = None

    @property
    def kind(self) -> str:
        return self.pipeline.kind

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return {k: v for k, v in d.items() if v is not None}

    def to_toml(self) -> str:
        """The resolved configuration as TOML (written into every run folder)."""
        return dump_toml(self.to_dict())


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _build_section(cls, raw: Any, section: str, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{section}] must be a table; got {_describe(raw)}.")
    names = {f.name for f in fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"{source}: [{section}] has an unknown field {key!r}."
                              f"{_suggest(key, names)} Allowed: {sorted(names)}.")
    values = {}
    for f in fields(cls):
        check, required = f.metadata["check"], f.metadata["required"]
        if f.name not in raw:
            if required:
                raise ConfigError(f"{source}: [{section}] {f.name} is required.")
            continue
        value = raw[f.name]
        if isinstance(value, int) and not isinstance(value, bool) and "float" in str(f.type):
            value = float(value)
        ok, what = check(value)
        if not ok:
            raise ConfigError(f"{source}: [{section}] {f.name} must be {what}; "
                              f"got {_describe(value)}.")
        values[f.name] = value
    return cls(**values)


def validate_config(raw: dict, *, source: str = "<dict>") -> PipelineConfig:
    """Check a raw mapping (as read from TOML) and return a :class:`PipelineConfig`.

    Raises
    ------
    ConfigError
        Naming ``source``, the section and the field, what was expected and what came in.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a pipeline file must be a TOML table; got {type(raw).__name__}.")
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{key}].{_suggest(key, SECTIONS)} "
                              f"Allowed: {list(SECTIONS)}.")
    for sec in REQUIRED_SECTIONS:
        if sec not in raw:
            raise ConfigError(f"{source}: the section [{sec}] is required.")
    pipeline = _build_section(PipelineSection, raw["pipeline"], "pipeline", source)
    kind = pipeline.kind
    wanted = KIND_SECTIONS[kind]
    for key in raw:
        if key not in wanted:
            raise ConfigError(f"{source}: a kind = {kind!r} pipeline has no section [{key}] "
                              f"(its sections: {', '.join(f'[{w}]' for w in wanted)}).")
    if kind == "decoding" and "model" not in raw:
        raise ConfigError(f"{source}: the section [model] is required.")
    optional_sections = ("pretrain",)  # built only when the file has them
    parts = {name: (_build_section(cls, raw.get(name, {}), name, source)
                    if name in wanted and (name in raw or name not in optional_sections)
                    else None)
             for name, cls in SECTIONS.items() if name != "pipeline"}
    if kind == "decoding":
        _check_decoding(parts, raw, source)
    data = parts["data"]
    if "simulator" in raw.get("data", {}) and data.simulator not in KIND_SIMULATORS[kind]:
        raise ConfigError(f"{source}: [data] simulator must be one of "
                          f"{list(KIND_SIMULATORS[kind])} in a kind = {kind!r} pipeline; "
                          f"got {_describe(data.simulator)}.")
    if "simulator" not in raw.get("data", {}):
        data.simulator = KIND_SIMULATORS[kind][0]
    evaluate = parts.get("evaluate")
    if evaluate is not None and evaluate.oracle and data.simulator != "motor_imagery":
        raise ConfigError(f"{source}: [evaluate] oracle = true needs [data] simulator = "
                          f"'motor_imagery' (the only simulator with an oracle); got "
                          f"{_describe(data.simulator)}.")
    return PipelineConfig(pipeline=pipeline, **parts, source=source)


#: Spec §2.5, classifier row (bcikit.train.duin_recipe.STAGE_RECIPES["classifier"]; kept here as
#: plain numbers so that reading a pipeline file never imports torch; a test checks they agree).
DUIN_CLASSIFIER_RECIPE = {"epochs": 200, "batch_size": 32, "lr": 2e-4, "weight_decay": 0.05,
                          "warmup_fraction": 0.1, "lr_min": 5e-6}


def _check_decoding(parts: dict, raw: dict, source: str) -> None:
    """Checks across fields of a decoding pipeline; resolves ``[train] recipe = "duin"``."""
    train, pre, prep = parts["train"], parts["pretrain"], parts["preprocess"]
    given = raw.get("train", {}) if isinstance(raw.get("train"), dict) else {}
    if train.recipe == "duin":
        r = DUIN_CLASSIFIER_RECIPE
        for key in ("epochs", "batch_size", "lr", "weight_decay"):
            if key not in given:
                setattr(train, key, r[key])
        if "optimizer" in given and train.optimizer != "adamw":
            raise ConfigError(f"{source}: [train] optimizer must be 'adamw' (or omitted) with "
                              f"recipe = 'duin' (AdamW without decay on 1-D parameters); got "
                              f"{_describe(train.optimizer)}.")
        if "scheduler" in given and train.scheduler != "none":
            raise ConfigError(f"{source}: [train] scheduler must be omitted with recipe = 'duin' "
                              f"(the recipe sets a warm-up + half-cosine schedule); got "
                              f"{_describe(train.scheduler)}.")
        train.optimizer, train.scheduler = "adamw", "none"
        if train.warmup_epochs is None:
            train.warmup_epochs = int(train.epochs * r["warmup_fraction"])
        if train.lr_min is None:
            train.lr_min = r["lr_min"]
        if train.warmup_epochs > train.epochs:
            raise ConfigError(f"{source}: [train] warmup_epochs must be <= epochs "
                              f"({train.epochs}); got {train.warmup_epochs}.")
        if train.lr_min > train.lr:
            raise ConfigError(f"{source}: [train] lr_min must be <= lr ({train.lr:g}); got "
                              f"{train.lr_min:g}.")
    else:
        for key in ("warmup_epochs", "lr_min"):
            if key in given:
                raise ConfigError(f"{source}: [train] {key} is a field of recipe = 'duin'; "
                                  f"set [train] recipe = \"duin\" or remove it.")
    if pre is None:
        return
    model = parts["model"]
    if model.name != "DuIN":
        raise ConfigError(f"{source}: [pretrain] pre-trains Du-IN and needs [model] name = "
                          f"'DuIN'; got {_describe(model.name)}. Remove [pretrain] for other "
                          f"models.")
    if pre.stage == "finetune" and pre.init is None:
        raise ConfigError(f"{source}: [pretrain] stage = 'finetune' needs init = \"RUN_DIR\" (a "
                          f"run folder holding pretrain/ checkpoints; CLI: --init RUN_DIR).")
    if pre.stage == "pretrain" and pre.init is not None:
        raise ConfigError(f"{source}: [pretrain] stage = 'pretrain' runs the pre-training, so "
                          f"init must be omitted; got init = {_describe(pre.init)}.")
    if not pre.stages and (pre.stage == "pretrain" or pre.init is not None):
        raise ConfigError(f"{source}: [pretrain] stages = [] trains from scratch: stage must be "
                          f"'all' and init omitted; got stage = {_describe(pre.stage)}, init = "
                          f"{_describe(pre.init)}.")
    if prep.alignment != "none":
        raise ConfigError(f"{source}: [preprocess] alignment must be 'none' with [pretrain] (the "
                          f"pre-training recordings are not aligned); got "
                          f"{_describe(prep.alignment)}.")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.field=value`` (value in TOML syntax; bare words are strings)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value (e.g. train.epochs=2); got {text!r}.")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set key {key!r} is not of the form section.field.")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Return a copy of ``raw`` with ``--set`` overrides applied (``a.b.c=value``)."""
    raw = copy.deepcopy(raw)
    for text in overrides or []:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a table.")
        node[path[-1]] = value
    return raw


def read_toml(path: str | os.PathLike) -> dict:
    """Read a TOML file; syntax errors name the file and the line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"The pipeline file {str(path)!r} does not exist.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err}).") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (TOML must be UTF-8).") from None


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` updated by ``override``: tables merge key by key, other values are replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_pipeline_toml(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Read a pipeline file and resolve its ``[pipeline] extends`` chain."""
    path = Path(path)
    raw = read_toml(path)
    parent = raw.get("pipeline", {}).get("extends") if isinstance(raw.get("pipeline"), dict) else None
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: [pipeline] extends must be a string (a TOML file path); "
                          f"got {_describe(parent)}.")
    base_path = (path.parent / parent).resolve()
    if base_path in _seen:
        raise ConfigError(f"{path}: [pipeline] extends forms a cycle through {str(base_path)!r}.")
    if not base_path.exists():
        raise ConfigError(f"{path}: [pipeline] extends names {parent!r}, but "
                          f"{str(base_path)!r} does not exist.")
    base = read_pipeline_toml(base_path, _seen + (path.resolve(),))
    merged = deep_merge(base, raw)
    merged["pipeline"].pop("extends", None)
    return merged


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, override and validate a pipeline file.

    Examples
    --------
    >>> cfg = load_config("pipelines/shallow_fbcsp.toml", ["train.epochs=2"])  # doctest: +SKIP
    >>> cfg.train.epochs  # doctest: +SKIP
    2
    """
    raw = apply_overrides(read_pipeline_toml(path), overrides)
    return validate_config(raw, source=str(path))


# --------------------------------------------------------------------------- TOML writing
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(data: dict, _prefix: str = "") -> str:
    """Minimal TOML writer for configuration dicts (None values are omitted)."""
    lines, tables = [], []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines)
    for key, value in tables:
        name = f"{_prefix}{key}"
        body = dump_toml(value, name + ".")
        out += ("\n\n" if out else "") + f"[{name}]" + ("\n" + body if body else "")
    return out.strip() + "\n" if not _prefix else out
