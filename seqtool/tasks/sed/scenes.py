"""Scenes mixed from isolated clips while training (``seqtool train sed --clips``).

A scene set is a layout, one entry per scene: the index of a given timeline, or None for a
random timeline. Scene i of a set is drawn from its own generator, seeded by (seed, set, i),
so a set is the same whenever it is rendered again (a resumed run, a rollback) and its length in
frames is known before any audio is mixed (the epoch's batches are planned from it).
"""

from __future__ import annotations

import numpy as np

from seqtool.core.memory import require_memory
from seqtool.data.audio import FeatureConfig, logmel
from seqtool.data.events import events_to_roll
from seqtool.data.synth import SCENE_BYTES_PER_SAMPLE, SceneRecipe, random_timeline, recipe_scene
from seqtool.errors import SeqtoolError
from seqtool.tasks.sed.data import Recording

__all__ = ["SceneMaker", "TRAIN", "VALIDATION", "NORMALISER"]

# which set a scene belongs to: part of its seed, so the sets never share a scene
TRAIN, VALIDATION, NORMALISER = 0, 1, 2


class SceneMaker:
    """Renders scene sets of ``recipe`` from ``library`` into Recordings (features and targets)."""

    def __init__(self, library: dict, recipe: SceneRecipe, features: FeatureConfig, labels):
        self.library, self.recipe, self.features, self.labels = library, recipe, features, list(labels)

    def samples(self, timeline_id) -> int:
        return int(round(self.recipe.seconds(timeline_id) * self.features.sr))

    def frames(self, layout) -> list[int]:
        return [self.features.n_frames(self.samples(t)) for t in layout]

    def check_memory(self, timeline_ids, n_random: int, what: str) -> None:
        """Refuse before mixing when a set's features (float32 frames and targets) or the mixing
        of its longest scene cannot fit in memory (counted without listing a huge set)."""
        per_frame = 4 * (self.features.n_mels + len(self.labels))
        frames = sum(self.frames(timeline_ids)) + n_random * self.frames([None])[0]
        longest = max([self.samples(None)] + [self.samples(t) for t in timeline_ids])
        require_memory(int(frames * per_frame + longest * SCENE_BYTES_PER_SAMPLE), what)

    def check_fits(self) -> None:
        """Refuse at the start, not epochs later, random timelines that cannot hold their events:
        the fewest events per class at the most polyphony, tried once (a scene that draws more
        than fit takes fewer)."""
        r = self.recipe
        lengths = {lab: [len(c) / self.features.sr for c in self.library[lab]] for lab in r.labels}
        try:
            random_timeline(r.labels, r.duration, r.events_per_class[0], r.polyphony[1],
                            np.random.default_rng(0), lengths)
        except SeqtoolError as e:
            raise SeqtoolError(f"random scenes: {e} (--events-per-class, --polyphony, --scene-seconds)") from None

    def layout(self, n_random: int, timeline_ids=None) -> list:
        """Every given timeline once (or those of ``timeline_ids``), then n_random random ones."""
        ids = range(len(self.recipe.timelines)) if timeline_ids is None else timeline_ids
        return [int(t) for t in ids] + [None] * int(n_random)

    def held_out_layout(self, seed: int, n_timeline: int, n_random: int) -> list:
        """A fixed set's layout: n_timeline of the given timelines picked by ``seed``."""
        picked = np.random.default_rng([seed, VALIDATION]).permutation(len(self.recipe.timelines))
        return self.layout(n_random, sorted(picked[:n_timeline].tolist()))

    def render(self, layout, seed: int, which: int, normalizer=None, prefix: str = "scene") -> list[Recording]:
        """The scenes of ``layout`` drawn from (seed, which): features (normalised when a
        normaliser is given) and frame targets."""
        out = []
        for i, timeline_id in enumerate(layout):
            name = f"{prefix}_{i:03d}.wav"
            rng = np.random.default_rng([seed, which, i])
            signal, events = recipe_scene(self.library, self.recipe, timeline_id, rng, self.features.sr, name)
            feats = logmel(signal, self.features)
            del signal
            if normalizer is not None:
                feats = normalizer(feats)
            roll = events_to_roll(events, self.labels, len(feats), self.features.hop_s)
            out.append(Recording(name, feats, roll, self.samples(timeline_id) / self.features.sr, events))
        return out
