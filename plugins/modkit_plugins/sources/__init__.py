"""Built-in data sources: text, JSONL, CSV/TSV, Parquet and saved `datasets` folders."""
