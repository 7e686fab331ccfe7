"""Data handling: text input, image ingestion, run folders and the release writer."""
