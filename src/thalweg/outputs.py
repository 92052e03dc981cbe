"""Where a command's files go, and the rule that none is replaced without asking.

`-o/--out DIR` is a directory for every command: the one its files go in (`landscape`,
`lr-find`, `inspect`), or the one that holds its named output (`train`/`meta`: a run
`DIR/NAME/`; `bench run`: `DIR/NAME/`; `trajectories`: `DIR/NAME.png`; `bench recipe`:
`DIR/NAME.toml`). An output that already exists is never silently replaced: the first free
`NAME-2`, `NAME-3`, … is taken and a note says so, unless `--overwrite` (runs:
`thalweg.train.rundir.lock.claim_run_dir`, the same numbering with a lock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = ["OutputError", "fresh", "holds_any", "numbered", "output_dir", "plain_name"]

#: suffixes that say "a file", which `-o` never is
_FILE_SUFFIXES = {".png", ".gif", ".svg", ".pdf", ".toml", ".json", ".jsonl", ".html", ".npz", ".pt", ".csv", ".txt"}


class OutputError(ValueError):
    """An output option that cannot be used (a file where a directory belongs)."""


def numbered(path: Path) -> Iterator[Path]:
    """`path`, then `path-2`, `path-3`, … (a file's suffix stays last: `a.png`, `a-2.png`; any
    other name is numbered whole: `run.v2`, `run.v2-2`)."""
    yield path
    stem, suffix = (path.stem, path.suffix) if path.suffix.lower() in _FILE_SUFFIXES else (path.name, "")
    for k in range(2, 100_000):
        yield path.with_name(f"{stem}-{k}{suffix}")


def fresh(path: Path, *, overwrite: bool = False, taken: Callable[[Path], bool] | None = None,
          what: str = "an earlier output") -> tuple[Path, str | None]:
    """(`path`, None) when it is free or `overwrite`; else the first free numbered one and a
    note naming both. `taken(p)` defaults to "p exists" (for a directory: holds anything)."""
    def exists(p: Path) -> bool:
        return p.is_file() or (p.is_dir() and any(p.iterdir())) or (p.exists() and not p.is_dir())

    busy = taken or exists
    if overwrite or not busy(path):
        return path, None
    for cand in numbered(path):
        if not busy(cand):
            return cand, f"{path} holds {what}, so this one is {cand} (--overwrite replaces it)"
    raise OutputError(f"{path}: no free numbered name left")


def holds_any(names: Iterable[str]) -> Callable[[Path], bool]:
    """A `taken` test for a directory: it holds one of these files (glob patterns)."""
    pats = list(names)
    return lambda d: d.is_dir() and any(next(d.glob(p), None) is not None for p in pats)


def output_dir(path: Path, option: str = "-o/--out") -> Path:
    """`path` as an output directory: refused (`OutputError`, naming the option) when it is an
    existing file or is written like a file name (`out.png`), so `-o` means one thing."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file; {option} is the directory the outputs go in")
    if path.suffix.lower() in _FILE_SUFFIXES and not path.exists():
        raise OutputError(f"{option} {path}: looks like a file name; {option} is the directory the outputs "
                          "go in (--name names the file where a command has one)")
    return path


def plain_name(name: str, option: str = "--name") -> str:
    """`name` when it is one plain file name (it goes inside `-o`); refused (`OutputError`,
    naming the option) when it is a path — `../../x`, `/tmp/x`, `a/b` — which would write
    outside `-o`, or empty, `.` or `..`."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or Path(name).is_absolute():
        raise OutputError(f"{option} {name!r}: a name is one file name, not a path (it is written inside "
                          "-o/--out; use -o to choose the directory)")
    return name
