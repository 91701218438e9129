"""The tessera-stac command line and the demo (thin: parse, call the library, print)."""
