"""Sentence pairs from TSV (``source<TAB>target`` per line) for seq2seq.

A line without a tab, or with an empty side, is a bad line: it is skipped and counted, and the
first few line numbers are kept so the message can point at them (``strict`` fails on the first
one instead). A line with more than one tab keeps the text after the second tab out of the pair
(Anki/Tatoeba exports carry an attribution column there) and is counted, so the caller can say
so (``Pairs.notes``): a dropped column is never silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seqtool.errors import SeqtoolError
from seqtool.errors import warn as _warn
from seqtool.io.fileio import display_name, open_input

__all__ = ["Pairs", "read_pairs", "BAD_LINES_SHOWN"]

BAD_LINES_SHOWN = 5  # line numbers listed in the bad-line message


@dataclass
class Pairs:
    sources: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)  # 1-based line of each pair
    bad_count: int = 0
    bad_lines: list[int] = field(default_factory=list)  # first BAD_LINES_SHOWN bad line numbers
    name: str = "<stdin>"
    extra_count: int = 0  # lines with more than two columns (the rest is dropped)
    extra_lines: list[int] = field(default_factory=list)  # first BAD_LINES_SHOWN of them

    def __len__(self) -> int:
        return len(self.sources)

    def bad_message(self) -> str | None:
        """'N bad lines in NAME (no tab or an empty side), first at lines a, b, ...' or None."""
        if not self.bad_count:
            return None
        shown = ", ".join(str(n) for n in self.bad_lines)
        more = ", ..." if self.bad_count > len(self.bad_lines) else ""
        s = "" if self.bad_count == 1 else "s"
        return (f"skipped {self.bad_count} bad line{s} in {self.name} (no tab or an empty side): "
                f"line{'' if len(self.bad_lines) == 1 else 's'} {shown}{more}")


    def extra_message(self) -> str | None:
        """'N lines of NAME have more than 2 columns; ...: line a, b' or None."""
        if not self.extra_count:
            return None
        shown = ", ".join(str(n) for n in self.extra_lines)
        more = ", ..." if self.extra_count > len(self.extra_lines) else ""
        s = "" if self.extra_count == 1 else "s"
        return (f"{self.extra_count} line{s} of {self.name} ha{'s' if s == '' else 've'} more than 2 "
                f"tab-separated columns; only the first two are used (source, target): "
                f"line{s} {shown}{more}")

    def notes(self) -> list[str]:
        """Every warning about the file (bad lines skipped, extra columns dropped)."""
        return [m for m in (self.bad_message(), self.extra_message()) if m]


def _problem(line: str) -> str | None:
    if "\t" not in line:
        return "no tab"
    source, target = line.split("\t")[:2]
    if not source.strip():
        return "empty source"
    if not target.strip():
        return "empty target"
    return None


def read_pairs(path, reverse: bool = False, strict: bool = False, warn=None) -> Pairs:
    """Read ``path`` ('-' = stdin). ``reverse`` swaps the columns (target<TAB>source files).

    Blank lines are ignored (a trailing empty line is common); other bad lines are counted, or
    with ``strict`` raise SeqtoolError naming the file and line. Lines with a third column are
    read (the first two columns) and counted; ``warn`` (default: seqtool.errors.warn) gets one
    message naming them. Skipped bad lines are left to the caller (``bad_message``).
    """
    name = display_name(path)
    pairs = Pairs(name=name)
    with open_input(path, binary=True) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            except UnicodeDecodeError as e:
                raise SeqtoolError(f"{name} line {lineno} is not valid UTF-8 ({e.reason}); convert it "
                                   f"first (e.g. iconv -f latin1 -t utf-8)") from None
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            problem = _problem(line)
            if problem is not None:
                if strict:
                    raise SeqtoolError(f"{name} line {lineno}: {problem} (expected source<TAB>target)")
                pairs.bad_count += 1
                if len(pairs.bad_lines) < BAD_LINES_SHOWN:
                    pairs.bad_lines.append(lineno)
                continue
            columns = line.split("\t")
            if len(columns) > 2:
                pairs.extra_count += 1
                if len(pairs.extra_lines) < BAD_LINES_SHOWN:
                    pairs.extra_lines.append(lineno)
            source, target = columns[:2]
            if reverse:
                source, target = target, source
            pairs.sources.append(source.strip())
            pairs.targets.append(target.strip())
            pairs.line_numbers.append(lineno)
    if not pairs.sources:
        detail = f" ({pairs.bad_message()})" if pairs.bad_count else ""
        raise SeqtoolError(f"{name} has no source<TAB>target pairs{detail}")
    if pairs.extra_count:
        (warn or _warn)(pairs.extra_message())
    return pairs
