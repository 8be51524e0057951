"""Running a trace: attaching and draining, the pipeline every command shares, reading recordings back."""
