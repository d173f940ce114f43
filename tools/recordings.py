"""Write ``converters/data/recordings.npz``: the recordings every comparison starts from, and the original AST
features of each, computed by the original's own code (torchaudio's kaldi fbank).

    tox -e recordings          # torch 2.11.0 + torchaudio 2.11.0: the only pair that installs and loads here

The recordings are synthesized here once (seeded), quantized to 16-bit PCM as a recording would be, and
stored: a later numpy or libm cannot change them. The espeak clip ``fixtures/audio/speech_en_16k.wav`` is the
one real-speech recording. For each recording and mel-bin count the file holds the raw fbank the original AST
repository computes (``src/dataloader.py``: ``torchaudio.compliance.kaldi.fbank`` with the settings below),
before its padding and normalization, which ``converters.ast.features`` applies; where torchaudio cannot be
installed (no release loads beside torch 2.14), the AST comparison reads these. ``recordings.json`` beside
it says how they were made, and the float32 rounding of torchaudio's fbank (against the same computation in
float64), from which the feature comparison's tolerance is derived.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from converters.recordings import DATA, METADATA, RECORDINGS, SAMPLING_RATE, Recording  # noqa: E402

SPEECH = ROOT / "fixtures" / "audio" / "speech_en_16k.wav"
MEL_BINS = (128, 64)  # the published models' and the input size users train with besides (README)
# The original's fbank settings (YuanGongND/ast src/dataloader.py, _wav2fbank), num_mel_bins aside.
KALDI = {"htk_compat": True, "sample_frequency": SAMPLING_RATE, "use_energy": False, "window_type": "hanning",
         "dither": 0.0, "frame_shift": 10}  # fmt: skip


def voice(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A voice-like signal: a harmonic tone gliding around 120 Hz, its loudness moving at 3 Hz, in noise."""
    t = np.arange(round(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    pitch = 120.0 + 80.0 * np.sin(2 * np.pi * (0.7 + rng.uniform(-0.2, 0.2)) * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLING_RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))
    return tone + 0.1 * rng.standard_normal(t.shape)


def noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(round(seconds * SAMPLING_RATE))


def quantized(signal: np.ndarray, rms: float) -> np.ndarray:
    """``signal`` at ``rms`` as 16-bit PCM holds it, clipped at full scale (a loud recording is); the gain is
    searched so that the clipped recording has the RMS asked for."""
    low, high = 0.0, 4 * rms / max(float(np.sqrt(np.mean(signal**2))), 1e-12)
    for _ in range(60):
        gain = (low + high) / 2
        pcm = np.clip(np.round(gain * signal * 32768), -32768, 32767)
        low, high = (gain, high) if np.sqrt(np.mean((pcm / 32768) ** 2)) < rms else (low, gain)
    return pcm.astype(np.int16)


def synthesize(recording: Recording) -> np.ndarray:
    """The recording's 16-bit samples."""
    if recording.kind == "speech":
        import soundfile

        samples, rate = soundfile.read(str(SPEECH), dtype="int16")
        assert rate == SAMPLING_RATE
        return np.asarray(samples)
    make = {"voice": voice, "noise": noise}[recording.kind]
    return quantized(make(recording.seconds, np.random.default_rng(recording.seed)), recording.rms)


def main() -> None:
    parser = argparse.ArgumentParser(description="write converters/data/recordings.npz and recordings.json")
    parser.add_argument("--output", type=Path, default=DATA)
    arguments = parser.parse_args()

    import torch
    import torchaudio
    from torchaudio.compliance import kaldi

    arrays: dict[str, np.ndarray] = {}
    rounding: dict[str, float] = {}
    for recording in RECORDINGS:
        pcm = synthesize(recording)
        arrays[f"wave/{recording.name}"] = pcm
        if not recording.ast:
            continue
        waveform = torch.from_numpy(pcm.astype(np.float32) / 32768)[None]
        for bins in MEL_BINS:
            fbank = kaldi.fbank(waveform, num_mel_bins=bins, **KALDI)
            exact = kaldi.fbank(waveform.double(), num_mel_bins=bins, **KALDI)
            arrays[f"fbank{bins}/{recording.name}"] = fbank.numpy()
            error = (fbank.double() - exact).abs().max().item()
            rounding[str(bins)] = max(rounding.get(str(bins), 0.0), error)
    np.savez_compressed(arguments.output, **arrays)  # type: ignore[arg-type]
    metadata = {
        "made_by": "tox -e recordings (python tools/recordings.py)",
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "fbank": {**KALDI, "num_mel_bins": list(MEL_BINS)},
        "float32_rounding": rounding,  # largest |fbank in float32 - the same in float64| over the recordings
    }
    arguments.output.with_name(METADATA).write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {arguments.output} ({arguments.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
