"""A CSV file is checked before it is read whole: one too large for the free memory is refused
in a moment (a 20 GB sparse file, as `truncate -s` makes, never written), a binary file or one
that is not UTF-8 is an error naming the line."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from thalweg.data import load_csv


def _rows(path: Path, n: int) -> None:
    with path.open("w") as f:
        f.write("a,b,label\n")
        f.writelines(f"{i % 7}.5,{i % 5}.25,{i % 2}\n" for i in range(n))


def test_a_20_gb_csv_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    _rows(big, 120_000)  # 1.2 MB of real rows, then a hole up to 20 GB
    os.truncate(big, 20 * 2**30)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"big\.csv: reading big\.csv \(20 GB\) needs about \d+ GB of memory, "
                                         r"but the cpu device has .* free; use a smaller file"):
        load_csv(path=big)
    assert time.perf_counter() - t0 < 5.0


def test_a_csv_that_fits_still_loads(tmp_path: Path) -> None:
    f = tmp_path / "ok.csv"
    _rows(f, 200)
    s = load_csv(path=f)
    assert len(s.x_train) + len(s.x_val) + len(s.x_test) == 200 and s.num_classes == 2


def test_a_file_of_nul_bytes_is_not_a_csv(tmp_path: Path) -> None:
    f = tmp_path / "holes.csv"
    f.write_bytes(b"")
    os.truncate(f, 20 * 2**30)
    with pytest.raises(ValueError, match=r"holes\.csv: not a text CSV file \(a NUL byte at byte 0\)"):
        load_csv(path=f)


def test_a_byte_that_is_not_utf8_is_named_with_its_line(tmp_path: Path) -> None:
    f = tmp_path / "latin1.csv"
    f.write_bytes(b"a,b,label\n1,2,0\n3,\xe94,1\n5,6,0\n")
    with pytest.raises(ValueError, match=r"latin1\.csv, line 3: not UTF-8 text \(byte 0xe9 at column 3\)"):
        load_csv(path=f)
