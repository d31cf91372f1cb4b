"""Registers a pycaffe-style 'caffe.proto' (package caffe) in a descriptor pool.

Kept free of fcnkit imports so a test can register it before fcnkit's schema loads.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, message_factory


def register_caffe_proto(pool) -> type:
    """Add file 'caffe.proto' with caffe.NetParameter {optional string name = 1}; return its class."""
    fdp = descriptor_pb2.FileDescriptorProto(name="caffe.proto", package="caffe", syntax="proto2")
    msg = fdp.message_type.add(name="NetParameter")
    msg.field.add(name="name", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.NetParameter"))
