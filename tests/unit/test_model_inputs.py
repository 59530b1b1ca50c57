"""The model's input preprocessing (shared/model_inputs.py), with values worked out by hand:
stacking (pad, cut, widths, shape errors), loudness normalisation (c0 centred per chunk,
contrast as log10 of the ratio to the chunk's mean peak + CONTRAST_REL_EPS), and the
per-channel standardisation (statistics, the constant-channel rule, both memory layouts)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from shared import model_inputs
from shared.model_inputs import (
    CONTRAST_REL_EPS,
    VAMP_INPUTS,
    apply_normalisation,
    compute_normalisation,
    loudness_normalise,
    stack_features,
)

F32 = np.float32


def chunk(**arrays: list) -> SimpleNamespace:
    return SimpleNamespace(**{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})


def a3(rows: list) -> np.ndarray:
    return np.asarray(rows, dtype=F32)


def log_ratio(x: float) -> F32:
    return np.log10(F32(x) + F32(CONTRAST_REL_EPS))


# -- stack_features ------------------------------------------------------------------------


def test_stack_pads_with_zeros_at_the_end_and_cuts_to_the_frame_count():
    batch = [chunk(mfcc=[[1, 2], [3, 4]]), chunk(mfcc=[[5, 6], [7, 8], [9, 10], [11, 12]])]
    out = stack_features(batch, {"mfcc": 3}, names=("mfcc",))
    assert list(out) == ["mfcc"]
    assert out["mfcc"].dtype == F32 and out["mfcc"].shape == (2, 3, 2)
    np.testing.assert_array_equal(out["mfcc"], [[[1, 2], [3, 4], [0, 0]], [[5, 6], [7, 8], [9, 10]]])


def test_stack_reads_the_vamp_inputs_by_default_each_with_its_own_frames():
    c = chunk(mfcc=[[1]], peaks=[[2, 3]], valleys=[[4, 5], [6, 7]], logmel=[[9]])
    out = stack_features([c], {"mfcc": 1, "peaks": 2, "valleys": 1})
    assert tuple(out) == VAMP_INPUTS == ("mfcc", "peaks", "valleys")
    np.testing.assert_array_equal(out["peaks"], [[[2, 3], [0, 0]]])
    np.testing.assert_array_equal(out["valleys"], [[[4, 5]]])


def test_stack_takes_the_widths_it_is_given_and_names_a_chunk_that_differs():
    batch = [chunk(mfcc=[[1, 2, 3]]), chunk(mfcc=[[1, 2]])]
    with pytest.raises(ValueError, match=r"^chunk 0: mfcc has shape \(1, 3\), expected \(frames, 2\)$"):
        stack_features(batch, {"mfcc": 1}, names=("mfcc",), widths={"mfcc": 2})
    with pytest.raises(ValueError, match=r"^chunk 1: mfcc has shape \(1, 2\), expected \(frames, 3\)$"):
        stack_features(batch, {"mfcc": 1}, names=("mfcc",))
    out = stack_features(batch[1:], {"mfcc": 2}, names=("mfcc",), widths={"mfcc": 2})
    np.testing.assert_array_equal(out["mfcc"], [[[1, 2], [0, 0]]])


def test_stack_refuses_an_array_that_is_not_frames_by_channels():
    with pytest.raises(ValueError, match=r"^chunk 0: mfcc has shape \(3,\), expected \(frames, 0\)$"):
        stack_features([chunk(mfcc=[1, 2, 3])], {"mfcc": 2}, names=("mfcc",))
    with pytest.raises(ValueError, match=r"^chunk 0: mfcc has shape \(1, 1, 2\), expected \(frames, 2\)$"):
        stack_features([chunk(mfcc=[[[1, 2]]])], {"mfcc": 2}, names=("mfcc",), widths={"mfcc": 2})


def test_an_empty_batch_stacks_to_empty_arrays():
    out = stack_features([], {"mfcc": 4}, names=("mfcc",))
    assert out["mfcc"].shape == (0, 4, 0) and out["mfcc"].dtype == F32
    assert stack_features([], {"mfcc": 4}, names=("mfcc",), widths={"mfcc": 3})["mfcc"].shape == (0, 4, 3)


# -- float32 copies and in-place work ------------------------------------------------------


def test_float32_reuses_a_float32_array_only_in_place():
    a = np.ones(3, dtype=F32)
    assert model_inputs._float32(a, True) is a
    b = model_inputs._float32(a, False)
    assert b is not a and b.dtype == F32
    c = model_inputs._float32(np.ones(3), True)
    assert c.dtype == F32 and c.base is None


# -- loudness_normalise ----------------------------------------------------------------------


def test_an_unknown_loudness_mode_is_refused():
    with pytest.raises(ValueError, match=r"^unknown loudness mode 'db'; expected 'chunk' or 'none'$"):
        loudness_normalise({}, "db")


def test_none_gives_float32_copies_of_the_features_as_they_are():
    x = np.array([[[1.5, -2.0]]])
    out = loudness_normalise({"peaks": x}, "none")
    assert out["peaks"].dtype == F32
    np.testing.assert_array_equal(out["peaks"], x)
    x32 = x.astype(F32)
    assert loudness_normalise({"peaks": x32}, "none", inplace=True)["peaks"] is x32
    assert loudness_normalise({"peaks": x32}, "none")["peaks"] is not x32


def test_chunk_centres_c0_per_chunk_and_leaves_the_other_coefficients():
    mfcc = a3([[[1, 5], [3, 7]], [[10, 1], [20, 2]]])
    out = loudness_normalise({"mfcc": mfcc}, "chunk")["mfcc"]
    np.testing.assert_array_equal(out, [[[-1, 5], [1, 7]], [[-5, 1], [5, 2]]])
    np.testing.assert_array_equal(mfcc, [[[1, 5], [3, 7]], [[10, 1], [20, 2]]])  # not in place


def test_chunk_divides_contrast_by_the_mean_peak_of_its_own_chunk():
    peaks = a3([[[1, 3]], [[10, 30]]])  # mean peak 2, then 20
    valleys = a3([[[-1, 2]], [[40, 0]]])  # negative magnitudes count as 0
    out = loudness_normalise({"peaks": peaks, "valleys": valleys}, "chunk")
    np.testing.assert_allclose(out["peaks"], [[[log_ratio(0.5), log_ratio(1.5)]]] * 2, rtol=0, atol=2e-7)
    np.testing.assert_allclose(out["valleys"], [[[log_ratio(0.0), log_ratio(1.0)]], [[log_ratio(2.0), log_ratio(0.0)]]],
                               rtol=0, atol=2e-7)
    assert out["valleys"][0, 0, 0] == np.log10(F32(CONTRAST_REL_EPS))  # the floor: -5


def test_the_level_is_the_mean_over_frames_and_bands():
    peaks = a3([[[1, 2], [3, 6]]])  # mean 3
    out = loudness_normalise({"peaks": peaks}, "chunk")["peaks"]
    np.testing.assert_allclose(out, [[[log_ratio(1 / 3), log_ratio(2 / 3)], [log_ratio(1), log_ratio(2)]]],
                               rtol=0, atol=2e-7)


def test_without_peaks_the_valleys_give_the_level():
    out = loudness_normalise({"valleys": a3([[[2, 6]]])}, "chunk")["valleys"]
    np.testing.assert_allclose(out, [[[log_ratio(0.5), log_ratio(1.5)]]], rtol=0, atol=2e-7)


def test_silent_contrast_is_the_floor_not_nan():
    out = loudness_normalise({"peaks": a3([[[0, 0]]]), "valleys": a3([[[0, 0]]])}, "chunk")
    for name in ("peaks", "valleys"):
        np.testing.assert_allclose(out[name], [[[-5, -5]]], rtol=0, atol=1e-6)


def test_a_gain_change_leaves_the_normalised_contrast_as_it_was():
    rng = np.random.default_rng(3)
    peaks = rng.uniform(0.1, 2.0, (2, 5, 7)).astype(F32)
    valleys = (peaks * F32(0.25)).astype(F32)
    a = loudness_normalise({"peaks": peaks, "valleys": valleys}, "chunk")
    b = loudness_normalise({"peaks": peaks * F32(8), "valleys": valleys * F32(8)}, "chunk")
    for name in ("peaks", "valleys"):
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6)


def test_in_place_normalisation_writes_into_float32_inputs():
    peaks = a3([[[1, 3]]])
    mfcc = a3([[[1, 5], [3, 7]]])
    out = loudness_normalise({"peaks": peaks, "mfcc": mfcc}, "chunk", inplace=True)
    assert out["peaks"] is peaks and out["mfcc"] is mfcc
    np.testing.assert_array_equal(mfcc, [[[-1, 5], [1, 7]]])
    assert peaks[0, 0, 0] == out["peaks"][0, 0, 0] and peaks[0, 0, 0] < 0


# -- compute_normalisation / apply_normalisation -------------------------------------------


def test_statistics_are_per_channel_over_every_chunk_and_frame():
    x = np.array([[[1, 10], [3, 10]], [[5, 10], [7, 10]]], dtype=F32)  # channel 0: 1,3,5,7
    stats = compute_normalisation({"mfcc": x})
    assert stats == {"mfcc": {"mean": [4.0, 10.0], "std": [np.sqrt(5.0), 1.0]}}
    assert all(type(v) is float for v in stats["mfcc"]["mean"] + stats["mfcc"]["std"])


def test_a_channel_counts_as_constant_below_a_std_of_1e_6():
    x = np.array([[[0.0, 0.0, 0.0]], [[2e-6, 1e-6, 4e-6]]])  # std 1e-6, 5e-7, 2e-6
    std = compute_normalisation({"a": x})["a"]["std"]
    assert std[0] == pytest.approx(1e-6, rel=1e-9) and std[1] == 1.0 and std[2] == pytest.approx(2e-6, rel=1e-9)


def test_standardisation_per_channel_in_both_memory_layouts():
    stats = {"mfcc": {"mean": [1.0, 10.0], "std": [2.0, 4.0]}}
    x = np.array([[[3, 18], [1, 10], [-1, 2]]], dtype=F32)
    want = [[[1, 2], [0, 0], [-1, -2]]]
    np.testing.assert_array_equal(apply_normalisation({"mfcc": x}, stats)["mfcc"], want)
    np.testing.assert_array_equal(x, [[[3, 18], [1, 10], [-1, 2]]])  # not in place
    strided = np.asfortranarray(x)  # not C-contiguous: the broadcasting branch
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(apply_normalisation({"mfcc": strided}, stats)["mfcc"], want)
    flat = np.array([[3, 18], [-1, 2]], dtype=F32)  # (n, F): one frame
    np.testing.assert_array_equal(apply_normalisation({"mfcc": flat}, stats)["mfcc"], [[1, 2], [-1, -2]])


def test_in_place_standardisation_and_inputs_without_statistics():
    stats = {"mfcc": {"mean": [1.0], "std": [2.0]}}
    x = np.array([[[5.0], [1.0]]], dtype=F32)
    raw = np.array([[[7.0]]])
    out = apply_normalisation({"mfcc": x, "logmel": raw}, stats, inplace=True)
    assert out["mfcc"] is x
    np.testing.assert_array_equal(x, [[[2.0], [0.0]]])
    assert out["logmel"].dtype == F32 and out["logmel"][0, 0, 0] == 7.0  # read raw by the network
    first = apply_normalisation({"logmel": raw, "mfcc": np.array([[[3.0]]], dtype=F32)}, stats)
    assert list(first) == ["logmel", "mfcc"] and first["mfcc"][0, 0, 0] == 1.0  # the raw input comes first
    kept = np.array([[[7.0]]], dtype=F32)
    assert apply_normalisation({"logmel": kept}, stats, inplace=True)["logmel"] is kept
    assert apply_normalisation({"logmel": kept}, stats)["logmel"] is not kept


def test_statistics_are_tiled_over_the_frames():
    stats = {"a": {"mean": [1.0, 2.0], "std": [3.0, 4.0]}}
    mean, std = model_inputs._tiled_stats(stats, "a", (3, 2))
    np.testing.assert_array_equal(mean, [1, 2, 1, 2, 1, 2])
    np.testing.assert_array_equal(std, [3, 4, 3, 4, 3, 4])
    assert mean.dtype == F32 and std.dtype == F32
    mean1, _ = model_inputs._tiled_stats(stats, "a", (2,))
    np.testing.assert_array_equal(mean1, [1, 2])
