"""Rendering: text reports, the Chrome trace export, and the shared formatting of times and sizes."""
