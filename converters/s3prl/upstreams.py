"""s3prl's upstreams as data: what ``Args.upstream`` names, the model family it is, and whether s3prl's upstream
expert layer-normalizes each waveform before the model.

Every s3prl upstream expert of these families (``upstream/{wav2vec2,hubert,wavlm,unispeech_sat,data2vec}/
expert.py``) applies ``F.layer_norm(wav, wav.shape)`` to each utterance when the upstream checkpoint's task
config says ``normalize`` (its training config's ``task.normalize``). The names are s3prl 0.4.18's ``hubconf.py``
functions; each row cites where its ``normalize`` comes from. Where no training config says (rows marked
``None``), the upstream is treated as unknown: the base model's encoder decides (a layer-norm feature encoder
was trained on normalized waveforms, for every official checkpoint: fairseq ties the two, "normalize: ... #
must be consistent with extractor"), said so in the report, and ``--normalize_waveform`` overrides.

FS = facebookresearch/fairseq, TA = pytorch/audio ``torchaudio/pipelines/_wav2vec2/impl.py`` (the bundle's
``_normalize_waveform``), unilm = microsoft/unilm.
"""

from __future__ import annotations

from dataclasses import dataclass

FS_PRETRAINING = "FS examples/wav2vec/config/pretraining/"


@dataclass(frozen=True)
class Upstream:
    name: str  # the hubconf function, as Args.upstream names it
    model_type: str  # the transformers family's base config model_type
    normalizes: bool | None  # None: no training config found; the base model's encoder decides
    evidence: str


# fmt: off
UPSTREAMS: tuple[Upstream, ...] = (
    Upstream("wav2vec2_base_960", "wav2vec2", False,
             FS_PRETRAINING + "wav2vec2_base_librispeech.yaml task.normalize: false; TA WAV2VEC2_BASE"),
    Upstream("wav2vec2_large_960", "wav2vec2", False, "TA WAV2VEC2_LARGE (_normalize_waveform=False, group norm)"),
    Upstream("wav2vec2_large_ll60k", "wav2vec2", True,
             FS_PRETRAINING + "wav2vec2_large_librivox.yaml task.normalize: true; TA WAV2VEC2_LARGE_LV60K"),
    Upstream("wav2vec2_large_lv60_cv_swbd_fsh", "wav2vec2", None, "no training config published (FS README lists it)"),
    Upstream("xlsr_53", "wav2vec2", True, "TA WAV2VEC2_XLSR53 (_normalize_waveform=True, layer norm)"),
    Upstream("xls_r_300m", "wav2vec2", True, "TA WAV2VEC2_XLSR_300M; FS examples/wav2vec/xlsr/config/finetune.yaml "
             "task.normalize: true"),
    Upstream("xls_r_1b", "wav2vec2", True, "TA WAV2VEC2_XLSR_1B (_normalize_waveform=True)"),
    Upstream("xls_r_2b", "wav2vec2", True, "TA WAV2VEC2_XLSR_2B (_normalize_waveform=True)"),
    Upstream("wav2vec2_conformer_relpos", "wav2vec2-conformer", True,
             FS_PRETRAINING + "wav2vec2_conformer_large_librivox.yaml task.normalize: true"),
    Upstream("wav2vec2_conformer_rope", "wav2vec2-conformer", True,
             FS_PRETRAINING + "wav2vec2_conformer_large_librivox.yaml (the same recipe, pos_enc_type rope: FS "
             "examples/wav2vec/README.md)"),
    Upstream("wav2vec2_large_voxpopuli_100k", "wav2vec2", None, "no training config published (voxpopuli README)"),
    Upstream("wav2vec2_base_s2st_es_voxpopuli", "wav2vec2", None, "no training config published"),
    Upstream("wav2vec2_conformer_large_s2st_es_voxpopuli", "wav2vec2-conformer", None, "no training config published"),
    Upstream("wav2vec2_base_s2st_en_librilight", "wav2vec2", None, "no training config published"),
    Upstream("wav2vec2_conformer_large_s2st_en_librilight", "wav2vec2-conformer", None, "no training config published"),
    Upstream("hubert_base", "hubert", False,
             "FS examples/hubert/config/pretrain/hubert_base_librispeech.yaml task.normalize: false; TA HUBERT_BASE"),
    Upstream("hubert_large_ll60k", "hubert", True,
             "FS examples/hubert/config/pretrain/hubert_large_librivox.yaml task.normalize: true; TA HUBERT_LARGE"),
    Upstream("hubert_base_robust_mgr", "hubert", None, "no training config published"),
    Upstream("mhubert_base_vp_en_es_fr_it3", "hubert", None, "no pretraining config published"),
    Upstream("contentvec", "hubert", False,
             "auspicious3000/contentvec contentvec/config/contentvec/contentvec.yaml task.normalize: false"),
    Upstream("contentvec_km100", "hubert", False,
             "auspicious3000/contentvec contentvec/config/contentvec/contentvec.yaml task.normalize: false"),
    Upstream("contentvec_km500", "hubert", False,
             "auspicious3000/contentvec contentvec/config/contentvec/contentvec.yaml task.normalize: false"),
    Upstream("ms_hubert", "hubert", None, "no training config published"),
    Upstream("wavlm_base", "wavlm", False,
             "TA WAVLM_BASE (_normalize_waveform=False); unilm issue 708: no input normalization for WavLM Base"),
    Upstream("wavlm_base_plus", "wavlm", False,
             "TA WAVLM_BASE_PLUS (_normalize_waveform=False); unilm issue 708"),
    Upstream("wavlm_large", "wavlm", True,
             "TA WAVLM_LARGE (_normalize_waveform=True); unilm issue 708: WavLM Large normalizes its input"),
    Upstream("unispeech_sat_base", "unispeech-sat", None, "no training config published (microsoft/UniSpeech)"),
    Upstream("unispeech_sat_base_plus", "unispeech-sat", None, "no training config published (microsoft/UniSpeech)"),
    Upstream("unispeech_sat_large", "unispeech-sat", None, "no training config published (microsoft/UniSpeech)"),
    Upstream("data2vec_base_960", "data2vec-audio", True,
             "FS examples/data2vec/config/audio/pretraining/base_librispeech.yaml task.normalize: true"),
    Upstream("data2vec_large_ll60k", "data2vec-audio", None,
             "no training config published for data2vec 1.0 large (FS examples/data2vec/README.md lists it)"),
)
# fmt: on
# hubconf functions that return another one's checkpoint
ALIASES = {
    "wav2vec2": "wav2vec2_base_960",
    "hubert": "hubert_base",
    "wavlm": "wavlm_base_plus",
    "unispeech_sat": "unispeech_sat_base_plus",
    "data2vec": "data2vec_base_960",
}
BY_NAME = {upstream.name: upstream for upstream in UPSTREAMS}


def upstream(name: object) -> Upstream | None:
    """The table's row for ``Args.upstream`` (an alias resolved), or None for a name it lacks."""
    text = str(name)
    return BY_NAME.get(ALIASES.get(text, text))
