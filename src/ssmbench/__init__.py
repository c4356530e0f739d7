"""ssmbench."""
