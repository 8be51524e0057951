"""Trace files: the on-disk format (writer, reader) and the header a recording keeps."""
