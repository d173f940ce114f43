"""S3PRL downstream checkpoints (SUPERB heads) on wav2vec2-family models to transformers' audio heads."""
