"""Analysis of stitched requests: histograms, per-command statistics, stall diagnosis and advice."""
