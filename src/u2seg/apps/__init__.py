"""Front ends built on the library: the HTTP service (server) and, later, the desktop window."""
