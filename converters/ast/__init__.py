"""Original Audio Spectrogram Transformer checkpoints (YuanGongND/ast) to transformers' AST."""
