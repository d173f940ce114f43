"""Original openai-whisper checkpoints (``torch.save({"dims": ..., "model_state_dict": ...})``, as
``whisper.load_model`` reads them) to transformers' ``WhisperForConditionalGeneration``, checked against the
openai-whisper package's own model and input pipeline."""
