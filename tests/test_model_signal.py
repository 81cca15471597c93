"""The channel arguments of the braindecode signature, checked the same way by every bcikit network."""

import mne
import pytest

from bcikit.models import get_model
from bcikit.models._signal import channel_names, resolve_n_chans

# (name, the other signal arguments) for each bcikit network that takes n_chans / chs_info
NETWORKS = [
    ("MVCNet", dict(n_outputs=2, n_times=1000, sfreq=250.0)),
    ("FLEEGNet", dict(n_outputs=2, n_times=1000, sfreq=250.0)),
    ("DuIN", dict(n_outputs=4, n_times=1000, sfreq=1000.0)),
]


def _chs(n):
    return [{"ch_name": f"C{i}"} for i in range(n)]


def test_names_from_every_accepted_form():
    info = mne.create_info(["a", "b", "c"], 250.0, "eeg")
    assert channel_names(info, "M") == ["a", "b", "c"]
    assert channel_names(info["chs"], "M") == ["a", "b", "c"]
    assert channel_names(["a", "b"], "M") == ["a", "b"]


@pytest.mark.parametrize("bad, match", [("Cz", "must be a list"), (3, "must be a list"),
                                        ([{"name": "Cz"}], "entry 0"), (["Cz", 4], "entry 1")])
def test_bad_chs_info_names_the_model_and_entry(bad, match):
    with pytest.raises(TypeError, match=f"'chs_info' parameter of M.*{match}"):
        resolve_n_chans(None, bad, "M")


def test_count_rules():
    assert resolve_n_chans(None, _chs(5), "M") == 5
    assert resolve_n_chans(5, None, "M") == 5
    assert resolve_n_chans(5, _chs(5), "M") == 5
    with pytest.raises(ValueError, match="M needs the number of channels: pass n_chans or chs_info"):
        resolve_n_chans(None, None, "M")
    with pytest.raises(ValueError, match="describes 4 channels but n_chans is 5"):
        resolve_n_chans(5, _chs(4), "M")
    with pytest.raises(ValueError, match="n_chans"):
        resolve_n_chans(0, None, "M")
    with pytest.raises(TypeError, match="n_chans"):
        resolve_n_chans(2.0, None, "M")


@pytest.mark.parametrize("name, kw", NETWORKS, ids=[n for n, _ in NETWORKS])
def test_every_network_resolves_channels_alike(name, kw):
    from_info = get_model(name, chs_info=_chs(8), **kw)
    from_count = get_model(name, n_chans=8, **kw)
    assert sum(p.numel() for p in from_info.parameters()) == \
        sum(p.numel() for p in from_count.parameters())
    with pytest.raises(ValueError, match=f"{name}.*describes 7 channels but n_chans is 8"):
        get_model(name, n_chans=8, chs_info=_chs(7), **kw)
    with pytest.raises(ValueError, match="needs the number of channels"):
        get_model(name, **kw)
