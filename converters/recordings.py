"""The recordings every comparison with an original starts from: what a user feeds a converted model.

Each is 16 kHz mono 16-bit PCM, stored in ``data/recordings.npz`` (made by ``tools/recordings.py``, which
says how), from quiet (0.01 RMS) to loud (0.5 RMS, clipped at full scale), from 0.7 s to 10.5 s, one of
them speech. Beside each AST recording the file holds the original AST repository's features of it,
computed with torchaudio's kaldi fbank, for when torchaudio cannot be installed beside the torch in use.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

SAMPLING_RATE = 16000
DATA = Path(__file__).with_name("data") / "recordings.npz"
METADATA = "recordings.json"


@dataclass(frozen=True)
class Recording:
    name: str
    kind: str  # "voice" (a harmonic glide in noise), "noise", "speech" (the espeak clip)
    seconds: float
    rms: float  # as stored (for speech: as recorded)
    seed: int = 0
    ast: bool = False  # the AST comparison's: the original's features of it are stored beside it

    @property
    def level(self) -> str:
        return f"{self.rms:g} RMS"

    @property
    def sha256(self) -> str:
        """The digest of its samples, as stored: a record names the recordings it was measured on by it."""
        import hashlib

        return hashlib.sha256(_stored()[f"wave/{self.name}"].tobytes()).hexdigest()

    def waveform(self) -> np.ndarray:
        """The recording as a model's extractor is given it: float32 in [-1, 1)."""
        return (_stored()[f"wave/{self.name}"].astype(np.float32) / 32768).astype(np.float32)

    def fbank(self, num_mel_bins: int) -> np.ndarray | None:
        """torchaudio's kaldi fbank of it with the original AST settings (frames x bins), or None where the
        file holds none for that many mel bins."""
        stored = _stored()
        key = f"fbank{num_mel_bins}/{self.name}"
        return np.asarray(stored[key]) if key in stored else None


# fmt: off
RECORDINGS: tuple[Recording, ...] = (
    Recording("voice-loud-10.5s", "voice", 10.5, 0.5, seed=1, ast=True),  # longer than AudioSet's 1024 frames: cut
    Recording("speech-4.8s", "speech", 4.79, 0.082, ast=True),  # padded
    Recording("voice-quiet-3s", "voice", 3.0, 0.01, seed=2, ast=True),
    Recording("noise-1s", "noise", 1.0, 0.05, seed=3, ast=True),
    Recording("voice-loud-1.2s", "voice", 1.2, 0.5, seed=4),
    Recording("voice-quiet-0.7s", "voice", 0.7, 0.01, seed=5),
)
# fmt: on
BY_NAME = {recording.name: recording for recording in RECORDINGS}


@functools.cache
def _stored() -> dict[str, np.ndarray]:
    with resources.files("converters").joinpath("data", "recordings.npz").open("rb") as file, np.load(file) as data:
        return {key: data[key] for key in data.files}


@functools.cache
def metadata() -> dict[str, Any]:
    """How the file was made (``tools/recordings.py``): versions, fbank settings, torchaudio's float32 rounding."""
    text = resources.files("converters").joinpath("data", METADATA).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def recordings(*names: str) -> list[Recording]:
    return [BY_NAME[name] for name in names]
