"""Spoken keywords: WAV reading, the MFCC front end, and the Speech Commands wav tree.

Front end (as in the usual keyword-spotting models for microcontrollers): 1 s of 16 kHz audio,
30 ms frames every 20 ms (49 frames), 512-point FFT, 40 mel bands 20-4000 Hz, log, DCT, the
first 10 coefficients -> (49, 10, 1).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from .common import Dataset, DatasetError, malformed, missing, require_dir, stratified_subset

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s
FRAME_LENGTH = 480          # 30 ms
FRAME_STEP = 320            # 20 ms
FFT_LENGTH = 512
MEL_BINS = 40
MEL_LOW_HZ, MEL_HIGH_HZ = 20.0, 4000.0
NUM_MFCC = 10
NUM_FRAMES = 1 + (CLIP_SAMPLES - FRAME_LENGTH) // FRAME_STEP  # 49

COMMAND_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
BACKGROUND = "_background_noise_"

LAYOUT = """\
  <data-dir>/<word>/<speaker>_nohash_<n>.wav   16 kHz mono 16-bit PCM, 1 s (shorter is padded)
  <data-dir>/validation_list.txt               relative paths (word/file.wav) of the validation split
  <data-dir>/testing_list.txt                  relative paths of the test split
  (<data-dir>/_background_noise_/ is skipped; every other listed file is training data)"""


def read_wav(path: Path | str, name: str = "audio", layout: str = LAYOUT,
             rate: int = SAMPLE_RATE) -> np.ndarray:
    """PCM WAV -> float32 mono in [-1, 1]; refuses a sample rate other than `rate`."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, fs, n = (w.getnchannels(), w.getsampwidth(), w.getframerate(),
                                      w.getnframes())
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise malformed(name, path, f"not a readable PCM WAV file ({e})", layout) from None
    if fs != rate:
        raise malformed(name, path, f"sample rate {fs} Hz, expected {rate} Hz (resample it, e.g. "
                        f"sox in.wav -r {rate} out.wav)", layout)
    if width == 2:
        audio = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 1:
        audio = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 4:
        audio = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    else:
        raise malformed(name, path, f"{8 * width}-bit samples are not supported (use 16-bit PCM)",
                        layout)
    if len(audio) % channels:
        raise malformed(name, path, "data length is not a whole number of frames (truncated?)",
                        layout)
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio


def fit_length(audio: np.ndarray, length: int = CLIP_SAMPLES) -> np.ndarray:
    """Zero-pad at the end or cut to exactly `length` samples (Speech Commands' convention)."""
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))


def mfcc(audio: np.ndarray, batch: int = 1024) -> np.ndarray:
    """(N, 16000) float32 audio -> (N, 49, 10, 1) float32 MFCCs, computed with tf.signal."""
    import tensorflow as tf

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] != CLIP_SAMPLES:
        raise DatasetError(f"mfcc expects (N, {CLIP_SAMPLES}) audio, got {audio.shape}")
    mel = tf.signal.linear_to_mel_weight_matrix(MEL_BINS, FFT_LENGTH // 2 + 1, SAMPLE_RATE,
                                                MEL_LOW_HZ, MEL_HIGH_HZ)
    out = []
    for start in range(0, len(audio), batch):
        stft = tf.signal.stft(audio[start:start + batch], FRAME_LENGTH, FRAME_STEP, FFT_LENGTH)
        magnitude = tf.abs(stft)
        log_mel = tf.math.log(tf.tensordot(magnitude, mel, 1) + 1e-6)
        out.append(tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :NUM_MFCC].numpy())
    if not out:
        return np.zeros((0, NUM_FRAMES, NUM_MFCC, 1), np.float32)
    return np.concatenate(out)[..., None].astype(np.float32)


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise missing("speech-commands", [path], LAYOUT)
    return {ln.strip().replace("\\", "/") for ln in path.read_text().splitlines() if ln.strip()}


def parse_words(words) -> list[str] | None:
    if words is None:
        return list(COMMAND_WORDS)
    if isinstance(words, str):
        if words.strip().lower() == "all":
            return None
        words = [w.strip() for w in words.split(",")]
    words = [w for w in words if w]
    if not words or len(set(words)) != len(words):
        raise DatasetError(f"speech-commands: words must be distinct and non-empty, got {words}")
    return words


def load_speech_commands(data_dir=None, words=None, seed: int = 0, max_train=None,
                         max_test=None, **_) -> Dataset:
    """words: list or comma-separated string, "all" for every word folder; default the 10
    command words."""
    root = require_dir("speech-commands", data_dir, LAYOUT)
    chosen = parse_words(words)
    if chosen is None:
        chosen = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != BACKGROUND)
        if not chosen:
            raise missing("speech-commands", [root / "<word>/"], LAYOUT)
    absent = [root / w for w in chosen if not (root / w).is_dir()]
    if absent:
        raise missing("speech-commands", absent, LAYOUT)
    validation = _read_list(root / "validation_list.txt")
    testing = _read_list(root / "testing_list.txt")

    train_files, train_y, test_files, test_y = [], [], [], []
    for label, word in enumerate(chosen):
        files = sorted((root / word).glob("*.wav"))
        if not files:
            raise missing("speech-commands", [root / word / "*.wav"], LAYOUT)
        for f in files:
            rel = f"{word}/{f.name}"
            if rel in testing:
                test_files.append(f)
                test_y.append(label)
            elif rel not in validation:
                train_files.append(f)
                train_y.append(label)
    if not train_files or not test_files:
        raise DatasetError(f"speech-commands: the split of {root} leaves "
                           f"{len(train_files)} training and {len(test_files)} test clips for "
                           f"{chosen}; testing_list.txt must name some of their files.\n"
                           f"Expected layout:\n{LAYOUT}")
    # Subset before decoding: reading and transforming every clip is the expensive part.
    tr = stratified_subset(np.array(train_y), max_train, seed)
    te = stratified_subset(np.array(test_y), max_test, seed + 1)

    def features(files):
        audio = np.stack([fit_length(read_wav(f, "speech-commands")) for f in files])
        return mfcc(audio)

    return Dataset(name="speech-commands", modality="audio",
                   x_train=features([train_files[i] for i in tr]),
                   y_train=np.array(train_y, np.int64)[tr],
                   x_test=features([test_files[i] for i in te]),
                   y_test=np.array(test_y, np.int64)[te],
                   class_names=list(chosen),
                   meta={"source": str(root), "words": list(chosen),
                         "split": "testing_list.txt is the test set; validation_list.txt is left "
                                  "out; the rest is training data",
                         "mfcc": {"sample_rate": SAMPLE_RATE, "frame_length": FRAME_LENGTH,
                                  "frame_step": FRAME_STEP, "fft_length": FFT_LENGTH,
                                  "mel_bins": MEL_BINS, "mel_hz": [MEL_LOW_HZ, MEL_HIGH_HZ],
                                  "coefficients": NUM_MFCC}})
