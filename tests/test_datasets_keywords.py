"""The espeak-ng keyword set: a tiny set generated for real, cached, and the missing-tool error."""

import shutil

import numpy as np
import pytest

from tinycil.datasets import DatasetError, load_dataset
from tinycil.datasets.speech import read_wav

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (sudo apt-get install espeak-ng)")


@pytest.mark.slow  # imports TensorFlow for the MFCCs
@needs_espeak
def test_keywords_tiny_set(tmp_path):
    options = dict(words=["yes", "no"], voices=["en-us", "en-gb+f2"], speeds=[150],
                   pitches=[40, 60], copies=3, cache=tmp_path)
    ds = load_dataset("keywords", **options)
    assert ds.modality == "audio" and ds.input_shape == (49, 10, 1)
    assert ds.class_names == ["yes", "no"]
    # 2 voices x 2 pitches = 4 utterances per word; 1 per word held out, 3 copies each
    assert np.bincount(ds.y_train).tolist() == [9, 9]
    assert np.bincount(ds.y_test).tolist() == [3, 3]
    assert ds.x_train.dtype == np.float32 and np.isfinite(ds.x_train).all()
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    clips = sorted(p.name for p in (tmp_path / "keywords" / "clips" / "yes").glob("*.wav"))
    assert clips == ["en-gb_f2_s150_p40.wav", "en-gb_f2_s150_p60.wav",
                     "en-us_s150_p40.wav", "en-us_s150_p60.wav"]
    # the second load comes from the feature cache and is identical
    again = load_dataset("keywords", **options)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    np.testing.assert_array_equal(ds.y_test, again.y_test)
    # the cached clips are real speech at 16 kHz, shorter than the 1 s window
    audio = read_wav(tmp_path / "keywords" / "clips" / "no" / "en-us_s150_p40.wav")
    assert 0.2 * 16000 < len(audio) < 16000 and np.abs(audio).max() > 0.1
    # copies of one utterance differ (shift, gain, noise), so no two training samples coincide
    flat = ds.x_train.reshape(len(ds.x_train), -1)
    assert len(np.unique(flat.round(4), axis=0)) == len(flat)

def test_keywords_without_espeak(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on this PATH
    with pytest.raises(DatasetError, match="apt-get install espeak-ng"):
        load_dataset("keywords", words="yes,no", cache=tmp_path)
