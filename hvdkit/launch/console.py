"""What the launcher shows of a job's output: rank 0's lines clean, other ranks' problems once.

mpirun (`--tag-output`) and horovodrun put a `[1,0]<stderr>:` / `[0]<stdout>:` tag before each
piece of a rank's output. A piece may end mid-line (a line written in two parts), so tags also
land inside lines; this module joins each rank's pieces back into whole lines, then:

- rank 0: the line as written, on the stream it was written to (stdout or stderr);
- other ranks: their stderr (warnings, errors, tracebacks), prefixed `rank N: `; their stdout
  only where it reads as a warning or an error;
- a warning line already shown (by any rank) is not shown again;
- frameworks' start-up noise (TensorFlow's absl and oneDNN lines, CPU-feature notes) is
  dropped on every rank, whatever TF_CPP_MIN_LOG_LEVEL does; nothing in the job changes;
- untagged lines (mpirun's or horovodrun's own) go to stderr.

`verbose` relays everything raw, tags included.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

_TAG = re.compile(r"\[(?:\d+,)?(\d+)\]<(stdout|stderr)>:")
NOISE = re.compile("|".join([
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
    r"^I\d{4} [\d:.]+\s+\d+ \S+:\d+\]",  # absl INFO lines (oneDNN, CPU features)
    r"^To enable the following instructions: .* rebuild TensorFlow",
    # GPU builds' start-up complaints about plugins registered twice
    r"^[WE]\d{4} [\d:.]+\s+\d+ \S*(computation_placer|cuda_(dnn|fft|blas))\.cc:\d+\]",
    r"^[WE]\d{4} .*Unable to register cu(DNN|FFT|BLAS) factory",
]))
_PROBLEM = re.compile(r"warn|error|exception|traceback|fail|abort|killed|fatal", re.I)
_WARNING = re.compile(r"warn", re.I)

Source = tuple[int, str] | None  # (rank, stream), or None for the launcher's own output


def is_noise(line: str) -> bool:
    """True for a framework start-up line that says nothing about this job."""
    return NOISE.search(line) is not None


class Console:
    """Feed it the job's merged output, line by line (`feed`), then `close` it."""

    def __init__(self, verbose: bool = False, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.verbose = verbose
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._partial: dict[Source, str] = {}
        self._shown_warnings: set[str] = set()
        self._muted: set[Source] = set()  # sources inside a warning shown before

    def feed(self, raw: str) -> None:
        """One line as read from the launcher's pipe (its newline included, if it had one)."""
        if self.verbose:
            self.out.write(raw)
            self.out.flush()
            return
        pieces: list[tuple[Source, str]] = []
        tags = list(_TAG.finditer(raw))
        start = tags[0].start() if tags else len(raw)
        if start > 0:
            pieces.append((None, raw[:start]))
        for i, tag in enumerate(tags):
            end = tags[i + 1].start() if i + 1 < len(tags) else len(raw)
            pieces.append(((int(tag.group(1)), tag.group(2)), raw[tag.end():end]))
        for source, text in pieces:
            text = self._partial.pop(source, "") + text
            if text.endswith("\n"):
                self._line(source, text[:-1])
            elif text:
                self._partial[source] = text
        self.out.flush()
        self.err.flush()

    def close(self) -> None:
        """Show what is left of unfinished lines."""
        for source, text in list(self._partial.items()):
            self._line(source, text)
        self._partial.clear()
        self.out.flush()
        self.err.flush()

    def _line(self, source: Source, text: str) -> None:
        line = text.rstrip("\r")
        if is_noise(line):
            return
        if source is None:
            self.err.write(line + "\n")
            return
        rank, stream = source
        if self._repeated_warning(source, line):
            return
        if rank == 0:
            (self.out if stream == "stdout" else self.err).write(line + "\n")
        elif stream == "stderr" or _PROBLEM.search(line):
            self.err.write(f"rank {rank}: {line}\n")

    def _repeated_warning(self, source: Source, line: str) -> bool:
        """True for a warning some rank showed already, and for the indented lines after it."""
        if source in self._muted and line[:1].isspace():
            return True
        self._muted.discard(source)
        if not _WARNING.search(line):
            return False
        if line in self._shown_warnings:
            self._muted.add(source)
            return True
        self._shown_warnings.add(line)
        return False
