"""Media I/O around the node: probing and opening the input, encoding the output with its audio."""
