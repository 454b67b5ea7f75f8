"""The Euclid archives: what raw VIS frames exist in a time window, and their downloads."""
