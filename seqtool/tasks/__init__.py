"""One module per task: charlm, genre, seq2seq, sed."""
