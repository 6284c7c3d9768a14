"""Bundled sample data (the sentiment corpus); shipped inside mlserve as mlserve.samples."""
