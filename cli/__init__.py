"""Click commands (imported as seqtool.cli)."""
