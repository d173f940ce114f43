"""The built-in recordings and the original AST features stored beside them are what ``tools/recordings.py``
makes: the recordings from its generator, the features from torchaudio's kaldi fbank (where torchaudio loads:
``tox -e ast-torchaudio`` runs that half, so that the stored features are held to the original's own code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from converters.ast.features import KALDI, torchaudio_fbank
from converters.recordings import RECORDINGS, SAMPLING_RATE, metadata
from tools.recordings import KALDI as WRITTEN_WITH
from tools.recordings import MEL_BINS, synthesize


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda r: r.name)
def test_each_recording_is_the_generators_at_its_length_and_level(recording: object) -> None:
    from converters.recordings import Recording

    assert isinstance(recording, Recording)
    stored = recording.waveform()
    # libm's sine may round a last bit otherwise on another machine: at most a step of 16-bit PCM, rarely
    made = synthesize(recording).astype(np.float32) / 32768
    assert stored.dtype == np.float32 and stored.shape == made.shape
    assert np.abs(stored - made).max() <= 1 / 32768 and np.mean(stored != made) < 1e-3
    assert len(stored) / SAMPLING_RATE == pytest.approx(recording.seconds, abs=0.01)
    assert float(np.sqrt(np.mean(stored.astype(np.float64) ** 2))) == pytest.approx(recording.rms, rel=0.02)
    assert np.abs(stored).max() <= 1.0  # clipped at full scale, as a loud recording is


def test_the_stored_features_were_made_with_the_originals_settings() -> None:
    assert KALDI == WRITTEN_WITH == {k: v for k, v in metadata()["fbank"].items() if k != "num_mel_bins"}
    assert metadata()["fbank"]["num_mel_bins"] == list(MEL_BINS)


@pytest.mark.parametrize("bins", MEL_BINS)
@pytest.mark.parametrize("recording", [r for r in RECORDINGS if r.ast], ids=lambda r: r.name)
def test_the_stored_fbank_is_torchaudios(recording: object, bins: int) -> None:
    from converters.recordings import Recording

    assert isinstance(recording, Recording)
    fbank = torchaudio_fbank()
    if fbank is None:
        pytest.skip("torchaudio does not load beside this torch: tox -e ast-torchaudio runs this")
    computed = fbank(torch.from_numpy(recording.waveform())[None], num_mel_bins=bins, **KALDI)
    stored = recording.fbank(bins)
    assert stored is not None and torch.equal(computed, torch.from_numpy(stored))
