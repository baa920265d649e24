"""Session fixtures of the fault suite: one tiny trained model per task, trained once by the real
command (``--steps 2``, a few hidden units), and the data each was trained on.

The models live in a session folder that no test may change; the fault tests watch it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import faultkit  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _train(root: Path, args) -> None:
    r = faultkit.run(["train", *args, "-q", "--seed", 1], root)
    assert r.rc == 0, str(r)


@pytest.fixture(scope="session")
def kit(tmp_path_factory):
    """Paths of the shared, read-only inputs: kit.root, kit.charlm, kit.seq2seq, kit.genre,
    kit.sed (models), kit.text, kit.pairs, kit.jsonl, kit.clips, kit.scenes, kit.gt."""
    root = tmp_path_factory.mktemp("faultkit")
    k = SimpleNamespace(root=root)
    k.text = root / "text.txt"
    k.text.write_text((SAMPLES / "tiny-shakespeare.txt").read_text(encoding="utf-8")[:20000],
                      encoding="utf-8")
    k.charlm = root / "charlm.model"
    _train(root, ["charlm", k.text, "-o", k.charlm, "--steps", 2, "--hidden", 8, "--embed", 4,
                  "--layers", 1, "--batch", 4, "--seq-len", 16])
    k.pairs = root / "pairs.tsv"
    k.pairs.write_text(faultkit.seq2seq_pairs(), encoding="utf-8")
    k.seq2seq = root / "seq2seq.model"
    _train(root, ["seq2seq", k.pairs, "-o", k.seq2seq, "--steps", 2, "--hidden", 8, "--embed", 4,
                  "--batch", 8])
    k.jsonl = root / "scores.jsonl"
    k.jsonl.write_text(faultkit.genre_jsonl(), encoding="utf-8")
    k.genre = root / "genre.model"
    _train(root, ["genre", k.jsonl, "-o", k.genre, "--steps", 2, "--hidden", 8, "--layers", 1,
                  "--batch", 4, "--val-frac", 0.25])
    k.clips = root / "clips"
    k.clips.mkdir()
    for label, freq in (("beep", 1000.0), ("buzz", 3000.0)):
        for i, secs in enumerate((0.4, 0.7)):
            faultkit.write_wav(k.clips / f"{label}{i:03d}.wav", secs, freq=freq)
    k.scenes = root / "scenes"
    r = faultkit.run(["synth-scenes", k.clips, "-o", k.scenes, "-n", 3, "--duration", 4,
                      "--events-per-class", 1, "--seed", 1, "-q"], root)
    assert r.rc == 0, str(r)
    k.gt = k.scenes / "ground_truth.tsv"
    k.sed = root / "sed.model"
    _train(root, ["sed", k.scenes, k.gt, "-o", k.sed, "--steps", 2, "--hidden", 8, "--layers", 1,
                  "--seq-len", 32, "--batch", 4, "--val-frac", 0.34, "--no-tune-decoding"])
    k.wav = sorted(k.scenes.glob("*.wav"))[0]
    return k


@pytest.fixture
def rng():
    return np.random.default_rng(0)
