"""Audio I/O and log-mel features, shared by sound event detection and genre classification.

Reading goes through soundfile (wav/flac/ogg); "-" means stdin/stdout, routed through BytesIO
because libsndfile cannot seek a pipe. Features match librosa's defaults (Slaney mel scale and
norm, periodic Hann, centered frames) without depending on librosa at runtime.
"""

from __future__ import annotations

import io
import math
import os
import struct
import sys
from dataclasses import asdict, dataclass, fields

import numpy as np

from seqtool.errors import SeqtoolError, UsageError
from seqtool.io.fileio import atomic_write_bytes

STDIO = "-"
MAX_SR = 768_000  # the highest sample rate of audio hardware and files in use
MAX_WINDOW_MS = 10_000.0  # a frame (window or hop) longer than 10 s describes no sound event


def _name(path) -> str:
    return "<stdin>" if str(path) == STDIO else str(path)


def _wav_truncated(head: bytes, total_size: int) -> bool:
    """True when a RIFF/WAVE header promises more sample bytes than the file holds.

    libsndfile silently reads what is there, so a cut-off download would otherwise pass as a
    shorter recording.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    pos = 12
    while pos + 8 <= len(head):
        chunk_id = head[pos:pos + 4]
        (size,) = struct.unpack("<I", head[pos + 4:pos + 8])
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF mark streamed WAVs whose writer could not seek back to fill the size
            if size in (0, 0xFFFFFFFF):
                return False
            return pos + 8 + size > total_size
        pos += 8 + size + (size & 1)
    return False


def read_audio(path, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file (or "-" for stdin) as a float32 mono signal; resample to target_sr."""
    import soundfile as sf

    name = _name(path)
    if str(path) == STDIO:
        data = sys.stdin.buffer.read()
        source = io.BytesIO(data)
        head, total = data[:65536], len(data)
    else:
        if not os.path.isfile(path):
            raise SeqtoolError(f"{name}: no such audio file")
        try:
            total = os.path.getsize(path)
            with open(path, "rb") as fh:
                head = fh.read(65536)
        except OSError as e:
            raise SeqtoolError(f"{name}: cannot read ({e.strerror or e})") from None
        source = path
    if total == 0:
        raise SeqtoolError(f"{name}: empty file, not audio")
    if _wav_truncated(head, total):
        raise SeqtoolError(f"{name}: truncated WAV file (header promises more data than present)")
    try:
        x, sr = sf.read(source, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError) as e:
        # libsndfile's message often repeats the path; keep only its reason
        reason = str(e).split(": ", 1)[-1] if "Error opening" in str(e) else str(e)
        raise SeqtoolError(f"{name}: cannot read audio ({reason.strip()})") from None
    if x.shape[0] == 0:
        raise SeqtoolError(f"{name}: audio file has no samples")
    x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    if not np.all(np.isfinite(x)):
        raise SeqtoolError(f"{name}: audio contains NaN or infinite samples")
    if target_sr is not None and int(target_sr) != sr:
        x = resample(x, sr, int(target_sr))
        sr = int(target_sr)
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


def resample(x: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling by the reduced rational factor target_sr/sr."""
    from scipy.signal import resample_poly

    if sr <= 0 or target_sr <= 0:
        raise SeqtoolError(f"sample rates must be positive, got {sr} -> {target_sr}")
    if sr == target_sr:
        return np.asarray(x, dtype=np.float32)
    g = math.gcd(int(sr), int(target_sr))
    return resample_poly(np.asarray(x, dtype=np.float64), target_sr // g, sr // g).astype(np.float32)


def write_wav(path, signal: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Write a mono (T,) or multichannel (T, C) WAV atomically, or to stdout for "-".

    Integer subtypes clip to [-1, 1] (soundfile's behaviour); callers that care scale first.
    """
    import soundfile as sf

    # render in memory first: a pipe cannot take a seeking WAV writer, and a bad
    # subtype or shape fails before anything touches the target
    buf = io.BytesIO()
    sf.write(buf, np.asarray(signal), int(sr), subtype=subtype, format="WAV")
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- features


@dataclass
class FeatureConfig:
    """Log-mel settings; stored in model files so prediction computes the same features."""

    sr: int = 16000
    win_ms: float = 40.0
    hop_ms: float = 20.0
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None  # None = sr / 2
    power: float = 2.0
    amin: float = 1e-10  # log floor, as librosa.power_to_db
    pad_mode: str = "reflect"

    def __post_init__(self):
        # Option values (--sr --win-ms --hop-ms --n-mels --fmin --fmax): a bad one is a usage error.
        for name in ("sr", "win_ms", "hop_ms", "n_mels"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UsageError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")
        if self.sr > MAX_SR:
            raise UsageError(f"--sr {self.sr} is above {MAX_SR} Hz, the highest rate audio files use")
        fmax = self.f_max
        if not (math.isfinite(self.fmin) and math.isfinite(fmax) and 0 <= self.fmin < fmax <= self.sr / 2):
            raise UsageError(f"--fmin/--fmax: need 0 <= fmin < fmax <= sr/2 = {self.sr / 2:g} Hz, "
                             f"got {self.fmin:g} and {fmax:g}")
        if self.hop_length < 1 or self.win_length < 2:
            raise UsageError(f"--win-ms {self.win_ms:g} / --hop-ms {self.hop_ms:g} are shorter than "
                             f"two samples / one sample at --sr {self.sr}")
        if self.win_ms > MAX_WINDOW_MS or self.hop_ms > MAX_WINDOW_MS:
            raise UsageError(f"--win-ms {self.win_ms:g} / --hop-ms {self.hop_ms:g}: frames longer than "
                             f"{MAX_WINDOW_MS / 1000:g} s are not audio features")

    @property
    def win_length(self) -> int:
        return int(round(self.sr * self.win_ms / 1000.0))

    @property
    def hop_length(self) -> int:
        return int(round(self.sr * self.hop_ms / 1000.0))

    @property
    def hop_s(self) -> float:
        return self.hop_length / self.sr

    @property
    def n_fft(self) -> int:
        return 1 << (self.win_length - 1).bit_length()

    @property
    def f_max(self) -> float:
        return self.sr / 2.0 if self.fmax is None else float(self.fmax)

    def n_frames(self, n_samples: int) -> int:
        """Frames logmel returns for a signal of n_samples (centered framing)."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SeqtoolError(f"feature settings: unknown key(s) {', '.join(unknown)}")
        return cls(**d)


# Slaney's mel scale (librosa htk=False): linear below 1 kHz, logarithmic above.
_MEL_F_SP = 200.0 / 3  # Hz per mel on the linear part
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    lin = f / _MEL_F_SP
    with np.errstate(divide="ignore"):
        log = _MEL_MIN_LOG_MEL + np.log(np.maximum(f, 1e-300) / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return np.where(f >= _MEL_MIN_LOG_HZ, log, lin)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MEL_MIN_LOG_MEL,
                    _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (m - _MEL_MIN_LOG_MEL)), _MEL_F_SP * m)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) triangular filters, Slaney area normalisation, float64."""
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)  # (F,)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))  # (M+2,)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]  # (M+2, F)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (M, F)
    # each triangle gets unit area in Hz, so wide high bands are not louder
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(n_frames, n_fft) read-only strided view of x."""
    n = 1 + (len(x) - n_fft) // hop
    return np.lib.stride_tricks.as_strided(x, shape=(n, n_fft), strides=(x.strides[0] * hop, x.strides[0]),
                                           writeable=False)


def power_spectrogram(signal: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(n_frames, n_fft//2 + 1) |STFT|**power, float64, frames centered at t * hop."""
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1:
        raise SeqtoolError(f"features need a mono signal, got shape {x.shape}")
    n_fft, win, hop = cfg.n_fft, cfg.win_length, cfg.hop_length
    pad = n_fft // 2
    # numpy's reflect needs at least 2 samples; tiny signals fall back to zeros
    mode = cfg.pad_mode if (cfg.pad_mode != "reflect" or len(x) > 1) else "constant"
    x = np.pad(x, pad, mode=mode)
    # periodic Hann of win samples centered inside the n_fft frame (librosa pad_center)
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)
    frames = _frames(x, n_fft, hop)  # (T, n_fft)
    out = np.empty((frames.shape[0], n_fft // 2 + 1))
    step = 2048  # bounded temporary memory for long recordings
    for s in range(0, frames.shape[0], step):
        spec = np.abs(np.fft.rfft(frames[s:s + step] * window, axis=1))
        out[s:s + step] = spec ** cfg.power if cfg.power != 1 else spec
    return out


_FB_CACHE: dict = {}


def logmel(signal: np.ndarray, cfg: FeatureConfig | None = None) -> np.ndarray:
    """(n_frames, n_mels) float32 log-mel energies in dB (power_to_db with ref=1, no top_db)."""
    cfg = cfg or FeatureConfig()
    key = (cfg.sr, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.f_max)
    fb = _FB_CACHE.get(key)
    if fb is None:
        fb = _FB_CACHE[key] = mel_filterbank(cfg.sr, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.f_max)
    mel = power_spectrogram(signal, cfg) @ fb.T  # (T, M)
    return (10.0 * np.log10(np.maximum(mel, cfg.amin))).astype(np.float32)


class Normalizer:
    """Per-band standardisation with statistics from the training features."""

    def __init__(self, mean=None, std=None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)

    def fit(self, features, eps: float = 1e-5) -> "Normalizer":
        """features: one (T, D) array or a list of them (pooled over all frames)."""
        if isinstance(features, np.ndarray):
            features = [features]
        feats = [np.asarray(f, dtype=np.float64).reshape(-1, np.shape(f)[-1]) for f in features]
        if not feats or sum(len(f) for f in feats) == 0:
            raise SeqtoolError("cannot fit feature normalisation on zero frames")
        # running sums avoid concatenating hours of features
        n = sum(len(f) for f in feats)
        s1 = sum(f.sum(axis=0) for f in feats)
        mean = s1 / n
        var = sum(((f - mean) ** 2).sum(axis=0) for f in feats) / n
        self.mean = mean.astype(np.float32)
        # constant bands (e.g. above a lowpass) would divide by zero
        self.std = np.sqrt(np.maximum(var, eps * eps)).astype(np.float32)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise SeqtoolError("feature normaliser used before fit")
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    transform = __call__

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        try:
            mean, std = d["mean"], d["std"]
        except (KeyError, TypeError):
            raise SeqtoolError("feature normaliser: expected keys 'mean' and 'std'") from None
        if len(mean) != len(std):
            raise SeqtoolError("feature normaliser: mean and std differ in length")
        return cls(mean, std)
