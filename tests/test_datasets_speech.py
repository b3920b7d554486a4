"""Speech Commands loader on a small wav tree written here in the real layout (16-bit PCM)."""

import wave

import numpy as np
import pytest

from tinycil.datasets import DatasetError, load_dataset
from tinycil.datasets.speech import NUM_FRAMES, NUM_MFCC, mfcc, read_wav

TONES = {"yes": 300.0, "no": 1200.0, "up": 2500.0}


def write_wav(path, audio, rate=16000, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def tone(freq, seconds=1.0, rate=16000, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.01
    return 0.5 * np.sin(2 * np.pi * freq * t) + noise


def write_tree(root, per_word=6, words=TONES):
    """Per word: files 0, 1 are in testing_list, file 2 in validation_list, the rest train."""
    testing, validation = [], []
    for word, freq in words.items():
        for i in range(per_word):
            name = f"{i:08x}_nohash_0.wav"
            seconds = 0.7 if i == per_word - 1 else 1.0  # one short clip: padded
            write_wav(root / word / name, tone(freq, seconds, seed=i))
            if i < 2:
                testing.append(f"{word}/{name}")
            elif i == 2:
                validation.append(f"{word}/{name}")
    write_wav(root / "_background_noise_" / "white_noise.wav", tone(50.0, 3.0))
    (root / "testing_list.txt").write_text("\n".join(testing) + "\n")
    (root / "validation_list.txt").write_text("\n".join(validation) + "\n")


@pytest.mark.slow  # imports TensorFlow for the MFCCs
def test_speech_commands_loads(tmp_path):
    write_tree(tmp_path)
    ds = load_dataset("speech-commands", data_dir=tmp_path, words=["yes", "no", "up"])
    assert ds.modality == "audio" and ds.input_shape == (NUM_FRAMES, NUM_MFCC, 1) == (49, 10, 1)
    assert ds.class_names == ["yes", "no", "up"]
    # 6 per word: 2 test, 1 validation (left out), 3 train
    assert np.bincount(ds.y_train).tolist() == [3, 3, 3]
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2]
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    assert "standardised" in ds.meta
    # different words (tones) give separable features: nearest class mean classifies the test set
    means = np.stack([ds.x_train[ds.y_train == c].mean(axis=0) for c in range(3)])
    dist = ((ds.x_test[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    assert (dist.argmin(axis=1) == ds.y_test).all()


def test_speech_commands_default_words_and_string_option(tmp_path):
    write_tree(tmp_path)
    with pytest.raises(DatasetError) as e:  # the default 10 command words are not all there
        load_dataset("speech-commands", data_dir=tmp_path)
    assert "down" in str(e.value) and "Expected layout" in str(e.value)
    ds = load_dataset("speech-commands", data_dir=tmp_path, words="no,up", max_train=4)
    assert ds.class_names == ["no", "up"] and len(ds.y_train) == 4
    ds = load_dataset("speech-commands", data_dir=tmp_path, words="all")
    assert ds.class_names == ["no", "up", "yes"]  # _background_noise_ skipped


def test_speech_commands_missing_lists(tmp_path):
    write_tree(tmp_path)
    (tmp_path / "testing_list.txt").unlink()
    with pytest.raises(DatasetError, match="testing_list.txt"):
        load_dataset("speech-commands", data_dir=tmp_path, words="yes")


def test_speech_commands_wrong_rate_and_broken_wav(tmp_path):
    write_tree(tmp_path)
    write_wav(tmp_path / "yes" / "00000004_nohash_0.wav", tone(300, rate=8000), rate=8000)
    with pytest.raises(DatasetError, match="8000 Hz"):
        load_dataset("speech-commands", data_dir=tmp_path, words="yes")
    (tmp_path / "yes" / "00000004_nohash_0.wav").write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(DatasetError, match="00000004_nohash_0.wav"):
        load_dataset("speech-commands", data_dir=tmp_path, words="yes")


def test_read_wav_and_mfcc_front_end(tmp_path):
    audio = tone(1000.0, 0.5)
    write_wav(tmp_path / "a.wav", audio)
    back = read_wav(tmp_path / "a.wav")
    np.testing.assert_allclose(back, audio, atol=2.0 / 32767)
    stereo = np.stack([audio, audio], axis=1).reshape(-1)
    write_wav(tmp_path / "s.wav", stereo, channels=2)
    np.testing.assert_allclose(read_wav(tmp_path / "s.wav"), audio, atol=2.0 / 32767)
    feats = mfcc(np.stack([tone(500.0), np.zeros(16000)]).astype(np.float32))
    assert feats.shape == (2, 49, 10, 1)
    # silence: the same (floor) coefficients in every frame
    np.testing.assert_allclose(feats[1], np.broadcast_to(feats[1, :1], feats[1].shape), atol=1e-4)
    assert not np.allclose(feats[0], feats[1])
