"""Synthetic event clips for the sed tests: three classes a tiny model tells apart within
seconds of training: a 1 kHz beep, a 200 Hz buzz (harmonic-rich) and a 4-6 kHz hiss."""

import numpy as np

SR = 16000
LABELS = ["beep", "buzz", "hiss"]


def tone_clip(label, seconds, rng):
    """A float32 clip of ``label`` at peak 0.5; the hiss draws its noise from ``rng``."""
    t = np.arange(int(seconds * SR)) / SR
    if label == "beep":
        x = np.sin(2 * np.pi * 1000 * t)
    elif label == "buzz":
        x = np.sign(np.sin(2 * np.pi * 200 * t)) * 0.7
    else:
        spec = np.fft.rfft(rng.standard_normal(len(t)))
        f = np.fft.rfftfreq(len(t), 1 / SR)
        spec[(f < 4000) | (f > 6000)] = 0
        x = np.fft.irfft(spec, len(t))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)
