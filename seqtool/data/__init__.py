"""Data readers: validate input and turn it into arrays."""
