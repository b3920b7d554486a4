"""A small spoken-keyword set synthesised with espeak-ng, for keyword spotting with no download.

Every (word, voice, speed, pitch) gives one clean utterance (cached as a 16 kHz WAV); each is then
placed in a 1 s window `copies` times, the first centred and clean, the others shifted at random
with white noise added at a random signal-to-noise ratio and a random gain. Train and test are
split by utterance, so no test clip is a noisy copy of a training clip. Features are the same
MFCCs as speech-commands.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

from .common import Dataset, DatasetError
from .speech import CLIP_SAMPLES, COMMAND_WORDS, SAMPLE_RATE, mfcc, parse_words, read_wav

VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+f3", "en-gb+f2", "en-029+m3",
          "en-us-nyc+f4"]
SPEEDS = [130, 160, 190]      # words per minute
PITCHES = [35, 50, 65]        # espeak-ng pitch 0..99
COPIES = 3                    # placements of each utterance in the 1 s window
SNR_DB = (5.0, 25.0)
TEST_FRACTION = 0.2
GENERATION_SEED = 0           # the set is fixed; the run seed only picks subsets


def cache_dir() -> Path:
    env = os.environ.get("TINYCIL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tinycil"


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DatasetError("keywords: the set is synthesised with espeak-ng, which is not "
                           "installed. Install it: sudo apt-get install espeak-ng")
    return exe


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(SAMPLE_RATE, rate)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)


def _write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written clip in the cache


def synthesise(word: str, voice: str, speed: int, pitch: int, folder: Path) -> np.ndarray:
    """One utterance as float32 16 kHz audio, cached as a WAV in `folder`."""
    path = folder / word / f"{voice.replace('+', '_')}_s{speed}_p{pitch}.wav"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = path.with_suffix(".espeak.wav")
        cmd = [_espeak(), "-w", str(raw), "-v", voice, "-s", str(speed), "-p", str(pitch), word]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if done.returncode != 0 or not raw.is_file():
            raise DatasetError(f"keywords: {' '.join(cmd)} failed: {done.stderr.strip()}")
        with wave.open(str(raw), "rb") as w:
            rate = w.getframerate()
        audio = read_wav(raw, "keywords", rate=rate)
        raw.unlink()
        _write_wav(path, _resample(audio, rate))
    return read_wav(path, "keywords")


def _trim(audio: np.ndarray) -> np.ndarray:
    """Cut leading and trailing silence, and anything beyond 1 s."""
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak == 0.0:
        return audio[:CLIP_SAMPLES]
    loud = np.flatnonzero(np.abs(audio) > 0.02 * peak)
    audio = audio[loud[0]:loud[-1] + 1]
    if len(audio) > CLIP_SAMPLES:
        cut = (len(audio) - CLIP_SAMPLES) // 2
        audio = audio[cut:cut + CLIP_SAMPLES]
    return audio


def _place(speech: np.ndarray, rng: np.random.Generator, augment: bool) -> np.ndarray:
    out = np.zeros(CLIP_SAMPLES, np.float32)
    slack = CLIP_SAMPLES - len(speech)
    start = int(rng.integers(0, slack + 1)) if augment else slack // 2
    if not augment:
        out[start:start + len(speech)] = speech
        return out
    gain = np.float32(rng.uniform(0.5, 1.0))
    out[start:start + len(speech)] = speech * gain
    speech_rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))) * float(gain)
    noise_rms = speech_rms / 10 ** (rng.uniform(*SNR_DB) / 20)
    out += rng.standard_normal(CLIP_SAMPLES).astype(np.float32) * np.float32(noise_rms)
    return np.clip(out, -1.0, 1.0)


def _utterance_split(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of test utterances: a seeded share of each word, at least one."""
    rng = np.random.default_rng(GENERATION_SEED)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise DatasetError("keywords: each word needs at least 2 utterances (voices x speeds "
                               "x pitches) to have both a training and a test part")
        k = min(len(idx) - 1, max(1, int(round(TEST_FRACTION * len(idx)))))
        test[rng.choice(idx, size=k, replace=False)] = True
    return test


def load_keywords(words=None, voices=None, speeds=None, pitches=None, copies: int = COPIES,
                  cache=None, progress: bool = False, **_) -> Dataset:
    """words: list or comma-separated (default the 10 command words); voices/speeds/pitches:
    the espeak-ng settings to combine; cache: folder for clips and features (default
    $TINYCIL_CACHE or ~/.cache/tinycil)."""
    chosen = parse_words(words) or list(COMMAND_WORDS)
    voices = list(voices or VOICES)
    speeds = [int(s) for s in (speeds or SPEEDS)]
    pitches = [int(p) for p in (pitches or PITCHES)]
    if copies < 1:
        raise DatasetError(f"keywords: copies must be at least 1, got {copies}")
    settings = {"words": chosen, "voices": voices, "speeds": speeds, "pitches": pitches,
                "copies": int(copies), "snr_db": list(SNR_DB), "seed": GENERATION_SEED,
                "test_fraction": TEST_FRACTION, "version": 1}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache).expanduser() if cache else cache_dir()
    folder = folder / "keywords"
    features = folder / f"features_{key}.npz"
    meta = {"source": "espeak-ng", "settings": settings, "cache": str(features)}
    if features.is_file():
        try:
            with np.load(features) as f:
                return Dataset(name="keywords", modality="audio", x_train=f["x_train"],
                               y_train=f["y_train"], x_test=f["x_test"], y_test=f["y_test"],
                               class_names=chosen, meta=meta)
        except Exception:  # damaged cache entry: build it again below
            features.unlink(missing_ok=True)

    _espeak()  # fail early with the install hint
    combos = [(w, v, s, p) for w in range(len(chosen)) for v in voices for s in speeds
              for p in pitches]
    iterator = combos
    if progress:
        from tqdm import tqdm
        iterator = tqdm(combos, desc="keywords: espeak-ng", unit="clip")
    rng = np.random.default_rng(GENERATION_SEED)
    clips, labels, utterance = [], [], []
    for u, (w, v, s, p) in enumerate(iterator):
        speech = _trim(synthesise(chosen[w], v, s, p, folder / "clips"))
        for c in range(copies):
            clips.append(_place(speech, rng, augment=c > 0))
            labels.append(w)
            utterance.append(u)
    labels = np.array(labels, np.int64)
    utterance = np.array(utterance)
    test_utt = _utterance_split(np.array([c[0] for c in combos]))
    is_test = test_utt[utterance]
    x = mfcc(np.stack(clips))
    ds = Dataset(name="keywords", modality="audio", x_train=x[~is_test], y_train=labels[~is_test],
                 x_test=x[is_test], y_test=labels[is_test], class_names=chosen, meta=meta)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = features.with_name(features.stem + ".tmp.npz")
    np.savez(tmp, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    tmp.replace(features)
    return ds
