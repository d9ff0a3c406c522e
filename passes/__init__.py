"""Graph passes, one file per IR step kind; importing this package registers them."""
