"""APC runtime for rare-earth and non-ferrous pyrometallurgy."""

__version__ = "0.1.0"
