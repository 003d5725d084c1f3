"""Node handlers by type; importing this package registers the built-in ones."""
