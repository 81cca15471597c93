"""Split protocols: disjoint parts, the right coverage, no group leakage, exact reference folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold as SkKFold
from sklearn.model_selection import StratifiedKFold

from bcikit.data import TrialSet
from bcikit.data.protocols import (PROTOCOL_ALIASES, PROTOCOLS, Split, apply_split,
                                   chronological_order, get_protocol)


def make_ts(rng: np.random.Generator, *, n_subjects=3, n_sessions=2, n_runs=3, per_run=8,
            n_classes=2, shuffle=True) -> TrialSet:
    """Trials with subject/session/run/onset metadata; rows stored in a random order when
    ``shuffle`` (recording order must then come from the metadata)."""
    rows = []
    for s in range(n_subjects):
        for se in range(n_sessions):
            for r in range(n_runs):
                labels = rng.permutation(np.arange(per_run) % n_classes)
                for t in range(per_run):
                    rows.append(dict(subject=f"S{s + 1:02d}", session=f"{se}", run=f"{r}",
                                     onset=4.0 * t + 0.5, y=labels[t], chron=len(rows)))
    meta = pd.DataFrame(rows)
    if shuffle:
        # keep subject/session/run blocks in order of appearance, shuffle trials inside each run
        block = np.arange(len(meta)) // per_run
        perm = np.lexsort((rng.random(len(meta)), block))
        meta = meta.iloc[perm].reset_index(drop=True)
    X = rng.standard_normal((len(meta), 2, 4)).astype(np.float32)
    y = meta.pop("y").to_numpy()
    return TrialSet(X, y, meta, None, [f"c{k}" for k in range(n_classes)])


# the protocols and parameter sets the property tests run over
CONFIGS = [
    ("chronological", {}),
    ("chronological", {"valid_frac": 0.0, "train_frac": 0.5}),
    ("chronological_kfold", {}),
    ("chronological_kfold", {"folds": "contiguous", "k": 4}),
    ("kfold", {}),
    ("kfold", {"k": 3, "valid_frac": 0.0, "seed": 7}),
    ("leave_one_run_out", {}),
    ("leave_one_run_out", {"valid": "run"}),
    ("cross_session", {}),
    ("cross_session", {"valid": 0.0, "test_session": "1", "train_sessions": ["0"]}),
    ("leave_one_subject_out", {}),
    ("leave_one_subject_out", {"valid": "subject", "n_valid_subjects": 1}),
    ("official_trials", {}),
]


def _col(ts, name):
    return ts.meta[name].astype(str).to_numpy()


@pytest.mark.parametrize("name,params", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_splits_are_disjoint_cover_and_respect_groups(name, params, rng):
    ts = make_ts(rng, n_sessions=3 if name == "cross_session" else 2)
    splits = get_protocol(name, **params).split(ts)
    subj, sess, run = _col(ts, "subject"), _col(ts, "session"), _col(ts, "run")
    run_key = np.char.add(np.char.add(subj.astype(str), "/"),
                          np.char.add(np.char.add(sess.astype(str), "/"), run.astype(str)))
    assert splits and all(isinstance(s, Split) for s in splits)
    n = len(ts)
    for s in splits:
        parts = [s.train, s.valid, s.test]
        assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts if p.size)
        assert all(p.size == 0 or (p.min() >= 0 and p.max() < n) for p in parts)
        allidx = np.concatenate(parts)
        assert np.unique(allidx).size == allidx.size, f"{s.name}: parts overlap"
        assert s.train.size > 0 and s.test.size > 0
        if params.get("valid_frac", params.get("valid", 0.2)) not in (0, 0.0):
            assert s.valid.size > 0, f"{s.name}: no validation trials"
        # every class trains
        assert set(ts.y[s.train]) == set(ts.y)
        if name == "leave_one_subject_out":
            test_subj = set(subj[s.test])
            assert test_subj == {s.group}
            assert not test_subj & set(subj[np.concatenate([s.train, s.valid])])
            if params.get("valid") == "subject":
                assert not set(subj[s.valid]) & set(subj[s.train])
            assert allidx.size == n  # everything is used somewhere
        else:
            # within-subject: every index belongs to the split's subject, all of them when used
            assert set(subj[allidx]) == {s.group}
        if name == "leave_one_run_out":
            assert len(set(run_key[s.test])) == 1
            assert not set(run_key[s.test]) & set(run_key[np.concatenate([s.train, s.valid])])
            if params.get("valid") == "run":
                assert len(set(run_key[s.valid])) == 1
                assert not set(run_key[s.valid]) & set(run_key[s.train])
        if name == "cross_session":
            test_sess = set(sess[s.test])
            assert len(test_sess) == 1
            assert not test_sess & set(sess[np.concatenate([s.train, s.valid])])
            # no session after the test session trains
            assert max(int(v) for v in sess[np.concatenate([s.train, s.valid])]) < int(next(iter(test_sess)))
    # coverage: the test parts of a cross-validation tile each subject exactly once
    if name in ("chronological_kfold", "kfold", "leave_one_run_out", "leave_one_subject_out"):
        tests = np.concatenate([s.test for s in splits])
        assert np.array_equal(np.sort(tests), np.arange(n))
    if name in ("chronological", "chronological_kfold", "kfold", "leave_one_run_out"):
        for s in splits:
            used = np.concatenate([s.train, s.valid, s.test])
            assert np.array_equal(np.sort(used), np.flatnonzero(subj == s.group))
    if name == "cross_session":
        for s in splits:
            assert set(sess[s.test]) == {params.get("test_session", "2")}
            expected_train = {"0"} if params.get("train_sessions") else {"0", "1"}
            assert set(sess[np.concatenate([s.train, s.valid])]) == expected_train
            assert np.array_equal(np.sort(np.concatenate([s.train, s.valid])),
                                  np.flatnonzero((subj == s.group) & np.isin(sess, list(expected_train))))


def test_chronological_matches_bnci2014_001_counts_and_time_order(rng):
    # one subject, 72 trials per class in 6 runs, stored out of order
    ts = make_ts(rng, n_subjects=1, n_sessions=1, n_runs=6, per_run=24)
    (split,) = get_protocol("chronological").split(ts)
    assert split.name == "S01/chronological" and split.group == "S01"
    chron = ts.meta["chron"].to_numpy()  # true recording position
    for c in (0, 1):
        tr = split.train[ts.y[split.train] == c]
        va = split.valid[ts.y[split.valid] == c]
        te = split.test[ts.y[split.test] == c]
        assert (tr.size + va.size, te.size) == (58, 14)  # ceil(0.8 * 72) = 58
        assert va.size == 12  # ceil(0.2 * 58)
        # train < valid < test in recording time, and the test part is the last 14 of the class
        assert chron[tr].max() < chron[va].min() and chron[va].max() < chron[te].min()
        cls_chron = np.sort(chron[ts.y == c])
        assert np.array_equal(np.sort(chron[te]), cls_chron[-14:])


def test_chronological_order_uses_run_order_then_onset(rng):
    ts = make_ts(rng, n_subjects=2, n_sessions=2, n_runs=2, per_run=5)
    order = chronological_order(ts)
    assert np.array_equal(ts.meta["chron"].to_numpy()[order], np.arange(len(ts)))
    # without onsets, trial order is kept
    plain = TrialSet(ts.X, ts.y, ts.meta.drop(columns="onset"), None, ts.classes)
    assert np.array_equal(chronological_order(plain), np.arange(len(ts)))


def test_chronological_kfold_class_balanced_blocks(rng):
    ts = make_ts(rng, n_subjects=1, n_sessions=1, n_runs=5, per_run=8)  # 20 trials per class
    splits = get_protocol("chronological_kfold", valid_frac=0.0).split(ts)
    assert [s.name for s in splits] == [f"S01/fold{f}" for f in range(5)]
    chron = ts.meta["chron"].to_numpy()
    for f, s in enumerate(splits):
        for c in (0, 1):
            te = np.sort(chron[s.test[ts.y[s.test] == c]])
            cls_chron = np.sort(chron[ts.y == c])
            assert np.array_equal(te, cls_chron[4 * f:4 * f + 4])  # the f-th contiguous block


def test_chronological_kfold_contiguous_equals_sklearn_kfold(rng):
    ts = make_ts(rng, n_subjects=1, n_sessions=1, n_runs=3, per_run=9)
    splits = get_protocol("chronological_kfold", folds="contiguous", valid_frac=0.0).split(ts)
    order = chronological_order(ts)
    for s, (tr, te) in zip(splits, SkKFold(5).split(order)):
        assert np.array_equal(s.test, np.sort(order[te]))
        assert np.array_equal(s.train, np.sort(order[tr]))


def test_kfold_equals_stratified_kfold_and_valid_is_stratified(global_random_seed, rng):
    ts = make_ts(rng, n_subjects=2, n_sessions=1, n_runs=3, per_run=10)
    splits = get_protocol("kfold", seed=global_random_seed, valid_frac=0.0).split(ts)
    for subject in ("S01", "S02"):
        idx = np.flatnonzero(_col(ts, "subject") == subject)
        ref = StratifiedKFold(5, shuffle=True, random_state=global_random_seed)
        mine = [s for s in splits if s.group == subject]
        for s, (tr, te) in zip(mine, ref.split(idx, ts.y[idx])):
            assert np.array_equal(s.test, idx[te]) and np.array_equal(s.train, idx[tr])
    with_valid = get_protocol("kfold", seed=global_random_seed, valid_frac=0.25).split(ts)
    for s, plain in zip(with_valid, splits):
        assert np.array_equal(s.test, plain.test)
        assert np.array_equal(np.sort(np.concatenate([s.train, s.valid])), plain.train)
        # each class gives ceil(0.25 * n_c) trials to validation
        for c in (0, 1):
            n_c = int((ts.y[plain.train] == c).sum())
            assert int((ts.y[s.valid] == c).sum()) == int(np.ceil(0.25 * n_c))


def test_leave_one_run_out_names_and_valid_run(rng):
    ts = make_ts(rng, n_subjects=1, n_sessions=1, n_runs=3, per_run=6)
    splits = get_protocol("loro", valid="run").split(ts)
    assert [s.name for s in splits] == ["S01/run=0", "S01/run=1", "S01/run=2"]
    run = _col(ts, "run")
    assert [set(run[s.valid]) for s in splits] == [{"1"}, {"2"}, {"0"}]
    two_sessions = make_ts(rng, n_subjects=1, n_sessions=2, n_runs=1, per_run=6)
    assert [s.name for s in get_protocol("leave_one_run_out").split(two_sessions)] == \
        ["S01/session=0/run=0", "S01/session=1/run=0"]


def test_protocol_errors_name_the_problem(rng):
    one_session = make_ts(rng, n_subjects=2, n_sessions=1)
    with pytest.raises(ValueError, match=r"at least 2 sessions.*found 1 session.*subject 'S01'"):
        get_protocol("cross_session").split(one_session)
    with pytest.raises(ValueError, match=r"test_session '5' is not among"):
        get_protocol("cross_session", test_session="5").split(make_ts(rng))
    with pytest.raises(ValueError, match=r"first session"):
        get_protocol("cross_session", test_session="0").split(make_ts(rng))
    one_run = make_ts(rng, n_subjects=1, n_sessions=1, n_runs=1)
    with pytest.raises(ValueError, match=r"at least 2 runs in subject 'S01'; found 1"):
        get_protocol("leave_one_run_out").split(one_run)
    with pytest.raises(ValueError, match=r"at least 3 values of 'subject'; found 2"):
        get_protocol("loso", valid="subject").split(make_ts(rng, n_subjects=2))
    with pytest.raises(ValueError, match=r"at least k=5 trials of each class in subject 'S01'"):
        get_protocol("kfold").split(make_ts(rng, n_subjects=1, n_sessions=1, n_runs=1, per_run=8))
    with pytest.raises(ValueError, match=r"Unknown protocol 'random'; allowed: \[.*'kfold'"):
        get_protocol("random")
    with pytest.raises(ValueError, match=r"Unknown parameter 'folds' for protocol 'kfold'; "
                                         r"allowed: \['k', 'seed', 'valid_frac', 'within'\]"):
        get_protocol("kfold", folds=3)
    with pytest.raises(ValueError, match=r"'folds' parameter of protocol 'chronological_kfold' "
                                         r"must be one of"):
        get_protocol("cv", folds="random")
    with pytest.raises(ValueError, match=r"'train_frac'.* must be in \(0.0, 1.0\)"):
        get_protocol("chronological", train_frac=1.0)
    with pytest.raises(ValueError, match=r"within='site2' names no metadata column"):
        get_protocol("kfold", within="site2").split(make_ts(rng))
    with pytest.raises(TypeError, match=r"'ts' parameter"):
        get_protocol("kfold").split(np.zeros((4, 2, 2)))


def test_registry_aliases_and_describe():
    assert set(PROTOCOLS) == {"chronological", "chronological_kfold", "kfold",
                              "leave_one_run_out", "cross_session", "leave_one_subject_out",
                              "official_trials"}
    for alias, target in PROTOCOL_ALIASES.items():
        assert type(get_protocol(alias)) is PROTOCOLS[target]
    for name, cls in PROTOCOLS.items():
        p = get_protocol(name)
        assert isinstance(p.describe(), str) and len(p.describe()) > 20
        assert type(get_protocol(name, **p.params)) is cls  # params round-trip


def test_within_all_pools_subjects(rng):
    ts = make_ts(rng, n_subjects=3, n_sessions=1, n_runs=2, per_run=10)
    splits = get_protocol("kfold", within="all").split(ts)
    assert [s.name for s in splits] == [f"fold{f}" for f in range(5)]
    assert all(s.group is None for s in splits)
    assert np.array_equal(np.sort(np.concatenate([s.test for s in splits])), np.arange(len(ts)))


def test_leave_one_subject_out_by_site_and_selected_subjects(rng):
    ts = make_ts(rng, n_subjects=4, n_sessions=1, n_runs=2)
    ts.meta["site"] = np.where(np.isin(ts.meta["subject"], ["S01", "S02"]), "A", "B")
    by_site = get_protocol("loso", by="site").split(ts)
    assert [s.name for s in by_site] == ["test-site=A", "test-site=B"]
    chosen = get_protocol("loso", test_subjects=["S03"], valid="subject", n_valid_subjects=2).split(ts)
    assert len(chosen) == 1 and chosen[0].group == "S03"
    assert set(_col(ts, "subject")[chosen[0].valid]) == {"S04", "S01"}  # the next two, cyclically
    assert set(_col(ts, "subject")[chosen[0].train]) == {"S02"}


def test_split_rejects_overlap_and_apply_split_tags_trials(rng):
    with pytest.raises(ValueError, match=r"train and test share 1 trial"):
        Split("bad", np.array([0, 1]), np.array([], int), np.array([1, 2]))
    ts = make_ts(rng, n_subjects=1, n_sessions=1, n_runs=2, per_run=10)
    split = get_protocol("chronological").split(ts)[0]
    train, valid, test = apply_split(ts, split)
    assert (len(train), len(valid), len(test)) == (split.train.size, split.valid.size, split.test.size)
    np.testing.assert_array_equal(test.X, ts.X[split.test])
    np.testing.assert_array_equal(test.y, ts.y[split.test])
    np.testing.assert_array_equal(test.meta["trial_index"], split.test)
    assert "trial_index" not in ts.meta  # the input is not modified
    # nested split keeps the outer trial ids
    inner = Split("inner", np.array([0, 1]), np.array([], int), np.array([2]))
    _, _, inner_test = apply_split(train, inner)
    assert inner_test.meta["trial_index"].tolist() == [int(split.train[2])]
    with pytest.raises(ValueError, match=r"out of range for a TrialSet of 3 trials"):
        apply_split(ts[np.arange(3)], split)
