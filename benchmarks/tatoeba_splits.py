"""Development and test splits of ../shared/data/tatoeba-eng-fra, keyed on the English side so
all translations of one English sentence fall on the same side (as the data set's own hold-out):

    int(md5(english).hexdigest(), 16) % 10 == 1  -> dev.tsv   (choices are made on it)
                                           == 2  -> test.tsv  (scored once, never tuned on)
    dev_train.tsv: every pair in neither;  train.tsv: every pair but test's

    python benchmarks/tatoeba_splits.py ../shared/data/tatoeba-eng-fra/eng-fra.tsv OUT_DIR
"""

import hashlib
import sys
from pathlib import Path


def bucket(english: str) -> int:
    return int(hashlib.md5(english.encode("utf-8")).hexdigest(), 16) % 10


def main(pairs: str, out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ("dev_train", "dev", "train", "test")
    files = {name: open(out_dir / f"{name}.tsv", "w", encoding="utf-8") for name in names}
    with open(pairs, encoding="utf-8") as f:
        for line in f:
            b = bucket(line.split("\t", 1)[0])
            files["dev" if b == 1 else "test" if b == 2 else "dev_train"].write(line)
            if b != 2:
                files["train"].write(line)
    for name, handle in files.items():
        handle.close()
        print(f"{name}.tsv: {sum(1 for _ in open(out_dir / f'{name}.tsv', encoding='utf-8')):,} pairs",
              file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:3])
