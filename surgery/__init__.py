"""Caffe model surgery: caffemodel I/O, fc->conv transplant, bilinear kernels, stage init."""
