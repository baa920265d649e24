"""What ``seqtool train seq2seq`` uses for every option not given: fixed defaults, and the
ones read off the training pairs (``from_data``). Options given always win; on --resume the
checkpoint's stored choices do.

Chosen on a development split of Tatoeba en->fr (benchmarks/tatoeba_splits.py: dev.tsv, never
the test split); benchmarks/README.md has the runs. On 2 cores:
- a bidirectional encoder, dropout 0.2, lr 2e-3 and min-count 2: dev BLEU 36.3 in 30 minutes;
  the previous defaults (unidirectional, dropout 0.1, lr 1e-3, every word) gave 25.3 on
  another held-out 10%;
- no input feeding (the decoder then runs as one whole-sequence call per layer): 18.5 epochs
  instead of 12 in 30 minutes, BLEU 36.3 instead of 28.1;
- the plateau rule, not a cosine to the budget's end: after 8 minutes (one thread) dev BLEU
  25.0 against 17.2; the model is far from converged in such budgets and the cosine's low lr
  in the second half slows it down.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["DEFAULTS", "READ_OFF_DATA", "from_data", "SpectrumFacts"]

DEFAULTS = {"cell": "lstm", "hidden": 256, "layers": 1, "embed": 128, "dropout": 0.2,
            "bidirectional": True, "attention": "general", "input_feeding": False, "unit": "word",
            "optimizer": "adam", "lr": 2e-3, "clip_norm": 5.0, "lr_schedule": "plateau", "warmup": 0,
            "batch": 64, "val_frac": 0.05, "min_count": 1, "teacher_forcing": 1.0, "reverse": False}

READ_OFF_DATA = ("min_count", "val_frac")  # what from_data chooses; DEFAULTS' values are fallbacks
# Words seen once are left out of a vocabulary (-> <unk>) when they are at least this share of
# its types yet at most that share of its tokens: a word met once cannot be learnt as an output,
# and each costs a softmax column (Tatoeba's French side: 40% of 14,449 types, 1.3% of tokens).
_RARE_TYPES = 0.2
_RARE_TOKENS = 0.02
# Validation pairs: 5%, but no more than needed for a steady loss (1,200 pairs) on large sets.
_VAL_PAIRS = 1200


class SpectrumFacts:
    """Types, tokens and words seen once on one side of the pairs."""

    def __init__(self, sentences) -> None:
        counts = Counter(tok for toks in sentences for tok in toks)
        self.types = len(counts)
        self.tokens = sum(counts.values())
        self.once = sum(1 for c in counts.values() if c == 1)

    def drop_singletons(self) -> bool:
        return (self.types > 0 and self.once >= _RARE_TYPES * self.types
                and self.once <= _RARE_TOKENS * self.tokens)


def from_data(src_tokens, tgt_tokens) -> tuple[dict, str]:
    """(defaults read off the tokenized pairs, a line saying why)."""
    source, target = SpectrumFacts(src_tokens), SpectrumFacts(tgt_tokens)
    min_count = 2 if target.drop_singletons() and source.drop_singletons() else 1
    n = len(tgt_tokens)
    val_frac = DEFAULTS["val_frac"] if n * DEFAULTS["val_frac"] <= _VAL_PAIRS else round(_VAL_PAIRS / n, 4)
    why = (f"min-count {min_count} ({target.once:,} of {target.types:,} target and "
           f"{source.once:,} of {source.types:,} source types occur once: "
           f"{100 * target.once / max(target.tokens, 1):.1f}% and "
           f"{100 * source.once / max(source.tokens, 1):.1f}% of the tokens), "
           f"val-frac {val_frac:g} ({int(round(n * val_frac)):,} pairs)")
    return {"min_count": min_count, "val_frac": val_frac}, why
