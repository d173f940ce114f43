"""Developer tools: the mutation score, golden updates, S3PRL differences."""
