"""Generated protobuf packages of Weft (see protos/)."""
