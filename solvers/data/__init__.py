"""Data layers, datasets and class lists for fcnkit (see layers.py for the Caffe layers)."""
