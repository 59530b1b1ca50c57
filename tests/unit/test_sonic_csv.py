"""sonic-annotator's CSV format: the parser on every golden file, the writer byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.reference import golden_dir
from shared.sonic_annotator import (
    TRANSFORMS,
    csv_name,
    csv_names,
    format_csv_rows,
    format_value,
    read_csv,
)

FOLDERS = {"csv": 6, "csv_digits9": 9, "csv_digits9_mixed_run": 9}
# rows per file, from the golden README's table
ROWS = {
    "music_22050": (646, 1292), "short_odd_22050": (30, 60), "stereo_44100": (431, 862),
    "silence_22050": (65, 130), "noise_22050": (108, 216),
}


def _golden() -> Path:
    g = golden_dir()
    if not (g / "csv").is_dir():
        pytest.skip(f"golden reference folder not found at {g} (set GENRE_REFERENCE_DIR)")
    return g


def _files(folder: str) -> list[Path]:
    return sorted((_golden() / folder).glob("*.csv"))


@pytest.mark.parametrize("folder", ["csv", "csv_digits9"])
def test_parser_shapes_and_times(folder: str) -> None:
    files = _files(folder)
    assert len(files) == 15
    for name, (mfcc_rows, contrast_rows) in ROWS.items():
        for key, fname in csv_names(name).items():
            times, values = read_csv(_golden() / folder / fname)
            rows = mfcc_rows if key == "mfcc" else contrast_rows
            assert values.dtype == np.float32 and times.dtype == np.float64
            assert values.shape == (rows, 20 if key == "mfcc" else 7)
            assert times[0] == 0.0 and np.all(np.diff(times) > 0)


def test_six_digits_agree_with_nine() -> None:
    for p6 in _files("csv"):
        t6, v6 = read_csv(p6)
        t9, v9 = read_csv(_golden() / "csv_digits9" / p6.name)
        np.testing.assert_array_equal(t6, t9)
        # 6 significant digits: within half a unit in the 6th digit
        err = np.abs(v6.astype(np.float64) - v9.astype(np.float64))
        assert np.all(err <= 5.000001e-6 * np.abs(v9.astype(np.float64)) + 1e-30)


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_formatter_round_trip_is_byte_identical(folder: str) -> None:
    for path in _files(folder):
        times, values = read_csv(path)
        text = format_csv_rows(times, values, FOLDERS[folder])
        assert text.encode("utf-8") == path.read_bytes(), path.name


def test_file_names() -> None:
    names = {p.name for p in _files("csv")}
    assert names == {csv_name(n, t) for n in ROWS for t in TRANSFORMS.values()}
    assert csv_names("a b.c")["mfcc"] == "a b.c_vamp_qm-vamp-plugins_qm-mfcc_coefficients.csv"


def test_value_formatting_details_seen_in_the_golden_files() -> None:
    """Each case below is a (value, text) pair taken from the golden files themselves."""
    seen: dict[str, set[str]] = {"exp": set(), "zero": set(), "plain": set()}
    for path in _files("csv"):
        for line in path.read_text().splitlines():
            for cell in line.split(",")[1:]:
                kind = "exp" if "e" in cell else "zero" if cell == "0" else "plain"
                if len(seen[kind]) < 50:
                    seen[kind].add(cell)
    assert seen["exp"] and seen["zero"] and seen["plain"]
    for cell in set().union(*seen.values()):
        assert format_value(np.float32(float(cell)), 6) == cell
    # exponents print without zero padding after "e-" (Qt arg + sonic-annotator's e-0 -> e-)
    assert all("e-0" not in c and "e+" not in c for c in seen["exp"])


def test_positive_exponent_and_integer_times() -> None:
    # `sonic-annotator --csv-digits 1` prints 51.58 as "5e+01" (checked with the real binary);
    # integer times are nanoseconds.
    assert format_value(51.58, 1) == "5e+01"
    assert format_csv_rows(np.array([0, 46439909], dtype=np.int64), np.array([[1.5e-7], [-0.0]]), 6) == (
        "0.000000000,1.5e-7\n0.046439909,0\n"
    )


def test_parser_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("0.0,1,2\n0.1,3\n")
    with pytest.raises(ValueError, match="not a sonic-annotator CSV"):
        read_csv(bad)
    bad.write_text("0.0,abc\n")
    with pytest.raises(ValueError, match="not a sonic-annotator CSV"):
        read_csv(bad)
