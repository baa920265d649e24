import io
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seqtool.data.audio import FeatureConfig, Normalizer, logmel, mel_filterbank, read_audio, write_wav
from seqtool.errors import SeqtoolError

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dcase2016-task2-office"


def tone(freq, sr, seconds, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------ reading and writing


def test_write_read_round_trip(tmp_path):
    x = tone(440, 16000, 0.5)
    p = tmp_path / "a.wav"
    write_wav(p, x, 16000)
    y, sr = read_audio(p)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < 2 / 32768  # 16-bit quantisation
    assert [f.name for f in tmp_path.iterdir()] == ["a.wav"]  # no temp file left behind


def test_write_replaces_atomically_and_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "a.wav"
    write_wav(p, tone(440, 8000, 0.1), 8000)
    before = p.read_bytes()
    with pytest.raises(Exception):
        write_wav(p, tone(440, 8000, 0.1), 8000, subtype="NOT_A_SUBTYPE")
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["a.wav"]


def test_stereo_is_mixed_down(tmp_path):
    left, right = tone(440, 16000, 0.2), tone(660, 16000, 0.2, amp=0.25)
    p = tmp_path / "st.flac"
    sf.write(p, np.stack([left, right], axis=1), 16000)
    y, _ = read_audio(p)
    assert y.ndim == 1
    assert np.max(np.abs(y - (left + right) / 2)) < 2 / 32768


def test_resample_keeps_frequency_and_length(tmp_path):
    p = tmp_path / "a.wav"
    write_wav(p, tone(1000, 44100, 1.0), 44100)
    y, sr = read_audio(p, target_sr=16000)
    assert sr == 16000 and len(y) == 16000
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.argmax(spec) == 1000  # 1 Hz bins for a 1 s signal


def test_stdin_and_stdout(tmp_path, monkeypatch, capsysbinary):
    x = tone(300, 8000, 0.25)
    write_wav("-", x, 8000)
    data = capsysbinary.readouterr().out
    assert data[:4] == b"RIFF"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    y, sr = read_audio("-")
    assert sr == 8000 and np.max(np.abs(y - x)) < 2 / 32768


def _valid_wav_bytes():
    buf = io.BytesIO()
    sf.write(buf, tone(440, 8000, 0.5), 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.mark.parametrize("kind,content,message", [
    ("empty", b"", "empty"),
    ("garbage", b"this is not audio at all" * 10, "cannot read"),
    ("truncated", None, "truncated"),
    ("header_only", None, "cannot read"),
])
def test_bad_files_name_the_file(tmp_path, kind, content, message):
    good = _valid_wav_bytes()
    content = {"truncated": good[:len(good) // 2], "header_only": good[:30]}.get(kind, content)
    p = tmp_path / f"{kind}.wav"
    p.write_bytes(content)
    with pytest.raises(SeqtoolError, match=message) as err:
        read_audio(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_zero_samples_and_missing(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(SeqtoolError, match=r"zero\.wav.*no samples"):
        read_audio(p)
    with pytest.raises(SeqtoolError, match=r"nope\.wav"):
        read_audio(tmp_path / "nope.wav")


# ------------------------------------------------------------------ features


def test_feature_config_defaults_and_dict():
    cfg = FeatureConfig()
    assert (cfg.win_length, cfg.hop_length, cfg.n_fft) == (640, 320, 1024)
    assert FeatureConfig(sr=16000, win_ms=32).n_fft == 512  # exactly a power of two stays
    other = FeatureConfig(sr=22050, n_mels=40, fmax=8000.0)
    assert FeatureConfig.from_dict(other.to_dict()) == other
    with pytest.raises(SeqtoolError, match="unknown"):
        FeatureConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(SeqtoolError):
        FeatureConfig(fmax=9000.0)  # above Nyquist


def test_logmel_shape_and_tone_band():
    cfg = FeatureConfig()
    x = tone(2000, 16000, 1.0)
    m = logmel(x, cfg)
    assert m.shape == (cfg.n_frames(len(x)), 64) == (51, 64)
    assert m.dtype == np.float32
    # the loudest band is the one whose triangle weights 2 kHz most
    fb = mel_filterbank(16000, 1024, 64, 0, 8000)
    assert np.argmax(m[25]) == np.argmax(fb[:, 2000 * 1024 // 16000])
    silence = logmel(np.zeros(1600, dtype=np.float32), cfg)
    assert np.all(silence == -100.0)  # the 1e-10 floor


def test_filterbank_triangles():
    fb = mel_filterbank(16000, 512, 20, 0, 8000)
    assert fb.shape == (20, 257) and np.all(fb >= 0)
    peaks = np.argmax(fb, axis=1)
    assert np.all(np.diff(peaks) > 0)  # centres rise with the band index
    # Slaney scale is linear below 1 kHz: the low band centres are evenly spaced
    low = peaks[peaks * 16000 / 512 < 900]
    assert np.ptp(np.diff(low)) <= 1


def _librosa_logmel(librosa, x, cfg):
    S = librosa.feature.melspectrogram(
        y=x.astype(np.float64), sr=cfg.sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=cfg.n_mels, fmin=cfg.fmin,
        fmax=cfg.fmax, htk=False, norm="slaney", dtype=np.float64)
    return librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None).T


@pytest.mark.parametrize("cfg", [FeatureConfig(),
                                 FeatureConfig(sr=22050, win_ms=25, hop_ms=10, n_mels=40, fmin=50.0, fmax=8000.0)])
def test_logmel_matches_librosa(cfg):
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    t = np.arange(cfg.sr * 2) / cfg.sr
    x = (0.1 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t)).astype(np.float32)
    ours = logmel(x, cfg)
    ref = _librosa_logmel(librosa, x, cfg)
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) < 1e-3


def test_logmel_matches_librosa_on_a_real_clip():
    librosa = pytest.importorskip("librosa")
    clip = DATA / "clips" / "cough040.wav"
    if not clip.is_file():
        pytest.skip("dcase2016-task2-office data not present")
    x, sr = read_audio(clip)
    cfg = FeatureConfig(sr=sr)
    assert np.max(np.abs(logmel(x, cfg) - _librosa_logmel(librosa, x, cfg))) < 1e-3


def test_normalizer():
    rng = np.random.default_rng(1)
    a = rng.normal(5, 2, size=(100, 3)).astype(np.float32)
    b = rng.normal(-1, 0.5, size=(50, 3)).astype(np.float32)
    norm = Normalizer().fit([a, b])
    both = np.concatenate([a, b])
    z = norm(both)
    assert np.allclose(z.mean(axis=0), 0, atol=1e-5) and np.allclose(z.std(axis=0), 1, atol=1e-4)
    again = Normalizer.from_dict(norm.to_dict())
    assert np.array_equal(again(a), norm(a))
    const = Normalizer().fit(np.ones((10, 2), dtype=np.float32))
    assert np.all(np.isfinite(const(np.ones((3, 2), dtype=np.float32))))
    with pytest.raises(SeqtoolError):
        Normalizer().fit([])
